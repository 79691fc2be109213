"""Running the registry: settings from flags and ``STEERLAB_*`` variables, and the server."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from steerlab.serving import GrpcServer, ServerSettings, ServiceBinding, SteerLabSettings
from steerlab.serving.auth import open_key_store
from steerlab.storage import open_database, resolve_database_url
from steerlab_api.v1 import registry_pb2_grpc

from .service import AUDITED, ROLES, SERVICE_NAME, RegistryServicer
from .store import RegistryStore


class RegistrySettings(SteerLabSettings):
    """``steerlab registry serve``: ``STEERLAB_DATABASE_URL`` and ``STEERLAB_REGISTRY_*``."""

    service: ClassVar[str] = "registry"

    database_url: str = Field(default_factory=resolve_database_url)
    server: ServerSettings = Field(default_factory=ServerSettings)


def registry_binding(store: RegistryStore) -> ServiceBinding:
    return ServiceBinding(
        SERVICE_NAME,
        RegistryServicer(store),
        registry_pb2_grpc.add_RegistryServiceServicer_to_server,
        ROLES,
        AUDITED,
    )


def build_registry_server(settings: RegistrySettings) -> tuple[GrpcServer, RegistryStore]:
    """Open (and migrate) the store and build a server for it; the caller starts and stops both."""
    store = RegistryStore(open_database(settings.database_url))
    keys = open_key_store(settings.server, settings.database_url)
    return GrpcServer([registry_binding(store)], settings.server, keys=keys), store
