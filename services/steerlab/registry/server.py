"""Running the registry: settings from flags and ``STEERLAB_*`` variables, and the server."""

from __future__ import annotations

from dataclasses import dataclass, field

from steerlab.serving import GrpcServer, ServerSettings, ServiceBinding
from steerlab.settings import DEFAULT_PORTS
from steerlab.storage import open_database, resolve_database_url
from steerlab_api.v1 import registry_pb2_grpc

from .service import SERVICE_NAME, RegistryServicer
from .store import RegistryStore

DEFAULT_PORT, DEFAULT_METRICS_PORT = DEFAULT_PORTS["registry"]


@dataclass(frozen=True)
class RegistrySettings:
    database_url: str = field(default_factory=resolve_database_url)
    server: ServerSettings = field(
        default_factory=lambda: ServerSettings(port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT)
    )

    @classmethod
    def from_env(
        cls,
        database_url: str | None = None,
        host: str | None = None,
        port: int | None = None,
        metrics_port: int | None = None,
    ) -> RegistrySettings:
        """Flags win over ``STEERLAB_DATABASE_URL`` and the ``STEERLAB_REGISTRY_*`` variables
        (see :meth:`ServerSettings.from_env`), which win over the defaults."""
        return cls(
            database_url=resolve_database_url(database_url),
            server=ServerSettings.from_env(
                "registry",
                DEFAULT_PORT,
                DEFAULT_METRICS_PORT,
                host=host,
                port=port,
                metrics_port=metrics_port,
            ),
        )


def registry_binding(store: RegistryStore) -> ServiceBinding:
    return ServiceBinding(
        SERVICE_NAME, RegistryServicer(store), registry_pb2_grpc.add_RegistryServiceServicer_to_server
    )


def build_registry_server(settings: RegistrySettings) -> tuple[GrpcServer, RegistryStore]:
    """Open (and migrate) the store and build a server for it; the caller starts and stops both."""
    store = RegistryStore(open_database(settings.database_url))
    return GrpcServer([registry_binding(store)], settings.server), store
