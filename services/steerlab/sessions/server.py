"""Running the session service: settings from flags and ``STEERLAB_*`` variables, and the server."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from steerlab.serving import GrpcServer, ServerSettings, ServiceBinding
from steerlab.settings import DEFAULT_PORTS, chosen
from steerlab.steering.errors import UnavailableError
from steerlab.storage import open_database, resolve_database_url
from steerlab_api.v1 import sessions_pb2_grpc

from .catalog import DimensionCatalog, RegistryCatalog, StaticCatalog
from .learn import FeedbackInterpreter, learn_method_from_env, make_interpreter
from .manager import SessionManager
from .service import SERVICE_NAME, SessionServicer
from .store import SessionStore

log = logging.getLogger(__name__)

DEFAULT_PORT, DEFAULT_METRICS_PORT = DEFAULT_PORTS["sessions"]


@dataclass(frozen=True)
class SessionSettings:
    database_url: str = field(default_factory=resolve_database_url)
    # The registry whose dimensions sessions may use; empty: the five built-in dimensions.
    registry: str = ""
    learn_method: str = field(default_factory=learn_method_from_env)  # intent or paper
    server: ServerSettings = field(
        default_factory=lambda: ServerSettings(port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT)
    )

    @classmethod
    def from_env(
        cls,
        database_url: str | None = None,
        registry: str | None = None,
        host: str | None = None,
        port: int | None = None,
        metrics_port: int | None = None,
        learn_method: str | None = None,
    ) -> SessionSettings:
        """Flags win over ``STEERLAB_DATABASE_URL``, ``STEERLAB_REGISTRY``,
        ``STEERLAB_LEARN_METHOD`` and the ``STEERLAB_SESSIONS_*`` variables (see
        :meth:`ServerSettings.from_env`)."""
        return cls(
            database_url=resolve_database_url(database_url),
            registry=chosen(registry, "STEERLAB_REGISTRY", ""),
            learn_method=learn_method or learn_method_from_env(),
            server=ServerSettings.from_env(
                "sessions",
                DEFAULT_PORT,
                DEFAULT_METRICS_PORT,
                host=host,
                port=port,
                metrics_port=metrics_port,
            ),
        )


def session_binding(manager: SessionManager) -> ServiceBinding:
    return ServiceBinding(
        SERVICE_NAME, SessionServicer(manager), sessions_pb2_grpc.add_SessionServiceServicer_to_server
    )


def build_session_server(
    settings: SessionSettings, interpreter: FeedbackInterpreter | None = None
) -> tuple[GrpcServer, SessionManager]:
    """Open (and migrate) the store and build a server; the caller starts and stops both.

    Without ``interpreter`` one is loaded and warmed up here, so that the first LEARN turn is
    as fast as the rest.
    """
    manager = open_session_manager(settings, interpreter)
    return GrpcServer([session_binding(manager)], settings.server), manager


def open_session_manager(
    settings: SessionSettings, interpreter: FeedbackInterpreter | None = None
) -> SessionManager:
    """The sessions' store (opened and migrated), dimension catalog and LEARN interpreter."""
    catalog: DimensionCatalog = (
        RegistryCatalog(settings.registry, token=settings.server.token)
        if settings.registry
        else StaticCatalog()
    )
    if interpreter is None:
        interpreter = make_interpreter(settings.learn_method)
        try:
            interpreter.warm_up(list(catalog.dimensions().values()))
        except UnavailableError as exc:
            log.warning("LEARN warm-up skipped: %s", exc)
    return SessionManager(SessionStore(open_database(settings.database_url)), catalog, interpreter)
