"""Running the registry: settings from flags and ``STEERLAB_*`` variables, and the server."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from steerlab.serving import GrpcServer, ServerSettings, ServiceBinding
from steerlab.steering.models import steerlab_home
from steerlab.storage import open_database
from steerlab.v1 import registry_pb2_grpc

from .service import SERVICE_NAME, RegistryServicer
from .store import RegistryStore

DEFAULT_PORT = 50051


def default_database_url() -> str:
    """The embedded default: a SQLite file in the SteerLab home directory."""
    return f"sqlite:///{steerlab_home() / 'registry.db'}"


@dataclass(frozen=True)
class RegistrySettings:
    database_url: str = field(default_factory=default_database_url)
    server: ServerSettings = field(default_factory=lambda: ServerSettings(port=DEFAULT_PORT))

    @classmethod
    def from_env(
        cls,
        database_url: str | None = None,
        host: str | None = None,
        port: int | None = None,
        metrics_port: int | None = None,
    ) -> RegistrySettings:
        """Flags win over ``STEERLAB_DATABASE_URL``, ``STEERLAB_REGISTRY_HOST``,
        ``STEERLAB_REGISTRY_PORT``, ``STEERLAB_METRICS_PORT`` (``off`` disables) and
        ``STEERLAB_MAX_MESSAGE_BYTES``, which win over the defaults."""
        env = os.environ
        metrics = env.get("STEERLAB_METRICS_PORT", "9464")
        return cls(
            database_url=database_url or env.get("STEERLAB_DATABASE_URL") or default_database_url(),
            server=ServerSettings(
                host=host or env.get("STEERLAB_REGISTRY_HOST", "127.0.0.1"),
                port=port if port is not None else _int_env("STEERLAB_REGISTRY_PORT", DEFAULT_PORT),
                metrics_port=metrics_port if metrics_port is not None else (
                    None if metrics == "off" else _int_env("STEERLAB_METRICS_PORT", 9464)
                ),
                max_message_bytes=_int_env("STEERLAB_MAX_MESSAGE_BYTES", ServerSettings.max_message_bytes),
            ),
        )


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def registry_binding(store: RegistryStore) -> ServiceBinding:
    return ServiceBinding(SERVICE_NAME, RegistryServicer(store), registry_pb2_grpc.add_RegistryServiceServicer_to_server)


def build_registry_server(settings: RegistrySettings) -> tuple[GrpcServer, RegistryStore]:
    """Open (and migrate) the store and build a server for it; the caller starts and stops both."""
    store = RegistryStore(open_database(settings.database_url))
    return GrpcServer([registry_binding(store)], settings.server), store
