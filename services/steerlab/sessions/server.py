"""Running the session service: settings from flags and ``STEERLAB_*`` variables, and the server."""

from __future__ import annotations

import logging
from typing import ClassVar

from pydantic import Field

from steerlab.serving import GrpcServer, ServerSettings, ServiceBinding, SteerLabSettings
from steerlab.serving.auth import open_key_store
from steerlab.steering.errors import UnavailableError
from steerlab.storage import open_database, resolve_database_url
from steerlab_api.v1 import sessions_pb2_grpc

from .catalog import DimensionCatalog, RegistryCatalog, StaticCatalog
from .learn import FeedbackInterpreter, LearnMethod, make_interpreter
from .manager import SessionManager
from .service import AUDITED, SERVICE_NAME, SessionServicer
from .store import DEFAULT_MAX_HISTORY_CHARACTERS, DEFAULT_MAX_TURNS, SessionLimits, SessionStore

log = logging.getLogger(__name__)


class SessionSettings(SteerLabSettings):
    """``steerlab sessions serve``: ``STEERLAB_DATABASE_URL``, ``STEERLAB_REGISTRY``,
    ``STEERLAB_LEARN_METHOD``, ``STEERLAB_SESSION_MAX_*`` and ``STEERLAB_SESSIONS_*``."""

    service: ClassVar[str] = "sessions"

    database_url: str = Field(default_factory=resolve_database_url)
    # The registry whose dimensions sessions may use; empty: the five built-in dimensions.
    registry: str = ""
    learn_method: LearnMethod = "intent"
    # What one session may hold; a full session refuses new turns (the user starts another).
    session_max_turns: int = Field(default=DEFAULT_MAX_TURNS, ge=2)
    session_max_history_characters: int = Field(default=DEFAULT_MAX_HISTORY_CHARACTERS, ge=1)
    server: ServerSettings = Field(default_factory=ServerSettings)


def session_binding(manager: SessionManager) -> ServiceBinding:
    return ServiceBinding(
        SERVICE_NAME,
        SessionServicer(manager),
        sessions_pb2_grpc.add_SessionServiceServicer_to_server,
        audited=AUDITED,
    )


def build_session_server(
    settings: SessionSettings, interpreter: FeedbackInterpreter | None = None
) -> tuple[GrpcServer, SessionManager]:
    """Open (and migrate) the store and build a server; the caller starts and stops both.

    Without ``interpreter`` one is loaded and warmed up here, so that the first LEARN turn is
    as fast as the rest.
    """
    manager = open_session_manager(settings, interpreter)
    keys = open_key_store(settings.server, settings.database_url)
    return GrpcServer([session_binding(manager)], settings.server, keys=keys), manager


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
    limits = SessionLimits(settings.session_max_turns, settings.session_max_history_characters)
    return SessionManager(SessionStore(open_database(settings.database_url), limits), catalog, interpreter)
