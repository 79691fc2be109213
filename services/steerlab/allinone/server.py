"""``steerlab up``: every service in one process, on one port, with the embedded stores.

The registry, session, job and inference services are the same servicers that run as separate
processes in production; here they share one gRPC server, one ``/metrics`` endpoint and one
database (SQLite in the data directory unless ``--database-url`` says otherwise). Extraction
jobs run on an in-process Celery worker. The session, inference and job services reach each
other (and the worker reaches the registry) through the server's own port, exactly as they
would across the network.

On first start the five built-in dimensions are extracted for the model by extraction jobs and
registered under the alias ``production``; later starts find them in the registry.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Self

from prometheus_client import CollectorRegistry
from pydantic import Field, field_validator

from steerlab.auth.principal import SERVICE_TENANT
from steerlab.auth.store import KeyStore
from steerlab.inference.server import InferenceServer, InferenceSettings, build_inference_server
from steerlab.jobs.server import JobServer, JobServiceSettings
from steerlab.jobs.spec import ExtractionJobSpec
from steerlab.jobs.worker import WorkerSettings
from steerlab.registry.server import registry_binding
from steerlab.registry.store import RegistryStore
from steerlab.serving import GrpcServer, ServerSettings, SteerLabSettings
from steerlab.serving.auth import open_key_store
from steerlab.sessions.learn import LearnMethod, make_interpreter
from steerlab.sessions.manager import SessionManager
from steerlab.sessions.server import SessionSettings, open_session_manager, session_binding
from steerlab.settings import PRODUCTION_ALIAS, embedded_database_url, platform_data_dir
from steerlab.steering.catalog import BUILTIN_MODELS
from steerlab.steering.datasets import BUILTIN_DIMENSIONS, builtin_dimensions
from steerlab.steering.errors import UnavailableError
from steerlab.storage import open_database

log = logging.getLogger(__name__)


class PlatformSettings(SteerLabSettings):
    """``steerlab up``: ``STEERLAB_MODEL``, ``STEERLAB_DATA_DIR``, ``STEERLAB_DATABASE_URL``,
    ``STEERLAB_MAX_BATCH``, ``STEERLAB_LEARN_METHOD`` and ``STEERLAB_UP_*``."""

    service: ClassVar[str] = "up"

    model: str = "smollm2-135m"
    data_dir: Path = Field(default_factory=platform_data_dir)
    database_url: str = ""  # empty: SQLite in data_dir
    max_batch: int | None = Field(default=None, ge=1)  # None: the engine's default
    learn_method: LearnMethod = "intent"
    server: ServerSettings = Field(default_factory=ServerSettings)

    @field_validator("model")
    @classmethod
    def _builtin_or_absolute(cls, model: str) -> str:
        return model if model in BUILTIN_MODELS else str(Path(model).resolve())

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, data_dir: Path) -> Path:
        return data_dir.resolve()

    @classmethod
    def from_env(cls, **flags: Any) -> Self:
        """As :meth:`SteerLabSettings.from_env`; port 0 is replaced by a free port at once,
        since the services call each other through it."""
        settings = super().from_env(**flags)
        if settings.server.port != 0:
            return settings
        server = settings.server.model_copy(update={"port": free_port(settings.server.host)})
        return settings.model_copy(update={"server": server})

    @property
    def database(self) -> str:
        return self.database_url or embedded_database_url(self.data_dir)

    @property
    def own_address(self) -> str:
        """Where the services reach each other: this server's port on the loopback interface."""
        host = self.server.host
        return f"{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{self.server.port}"


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class Platform:
    """Everything ``steerlab up`` runs; ``close()`` after the server has stopped."""

    settings: PlatformSettings
    server: GrpcServer
    inference: InferenceServer
    jobs: JobServer
    registry: RegistryStore
    sessions: SessionManager
    keys: KeyStore | None = None
    # With --auth keys, the key the services use to call each other, revoked on close.
    internal_key_id: str = ""

    def close(self) -> None:
        self.jobs.close()
        self.inference.close()
        self.sessions.store.close()
        self.registry.close()
        if self.keys is not None:
            if self.internal_key_id:
                self.keys.revoke(self.internal_key_id)
            self.keys.close()

    def describe(self) -> str:
        lm = self.inference.engine.model
        return (
            f"model {lm.name}; registry, sessions, jobs and inference on one port; "
            f"database {self.registry.database.description}"
        )


def build_platform(settings: PlatformSettings) -> Platform:
    """Open the stores, load the model and the LEARN interpreter, and build the one server."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    metrics = CollectorRegistry()
    keys = open_key_store(settings.server, settings.database)
    internal_token, internal_key_id = settings.server.token, ""
    if keys is not None:
        record, internal_token = keys.create(SERVICE_TENANT, "steerlab-up", "admin")
        internal_key_id = record.key_id
    # The services' own settings: only the credential they call each other with matters, since
    # their bindings are served by the one server below.
    internal = settings.server.model_copy(
        update={"port": 0, "metrics_port": None, "auth": "none", "token": internal_token}
    )
    registry = RegistryStore(open_database(settings.database))
    # The catalog reads this server's registry, which is not listening yet: warm LEARN up on
    # the built-in dimensions instead (the catalog itself is read per request, later).
    interpreter = make_interpreter(settings.learn_method)
    interpreter.warm_up(builtin_dimensions())
    sessions = open_session_manager(
        SessionSettings(database_url=settings.database, registry=settings.own_address, server=internal),
        interpreter,
    )
    jobs = JobServer(
        JobServiceSettings(
            # No broker: the in-process worker runs the jobs, whatever STEERLAB_BROKER_URL says.
            worker=WorkerSettings(
                database_url=settings.database,
                registry=settings.own_address,
                broker_url="",
                token=internal_token,
            ),
            server=internal,
        ),
        metrics,
    )
    inference_settings = InferenceSettings(
        model=settings.model,
        registry=settings.own_address,
        sessions=settings.own_address,
        server=internal,
    )
    if settings.max_batch:
        engine = replace(inference_settings.engine, max_batch=settings.max_batch)
        inference_settings = inference_settings.model_copy(update={"engine": engine})
    inference = build_inference_server(inference_settings, start_engine=False, metrics_registry=metrics)
    bindings = [
        registry_binding(registry),
        session_binding(sessions),
        jobs.binding,
        *inference.server.services,
    ]
    server = GrpcServer(bindings, settings.server, metrics, keys)
    return Platform(settings, server, inference, jobs, registry, sessions, keys, internal_key_id)


def ensure_builtin_dimensions(platform: Platform, say: Callable[[str], None] = print) -> None:
    """Extract and register any built-in dimension the registry lacks for this model (jobs on
    the in-process worker); returns when all five are registered. Raises if a job fails."""
    digest = platform.inference.engine.model.fingerprint.weights_digest
    missing = [
        name
        for name in BUILTIN_DIMENSIONS
        if not platform.registry.list_vector_sets(dimension=name, model=digest).records
    ]
    if not missing:
        say(f"built-in dimensions: all {len(BUILTIN_DIMENSIONS)} registered for this model")
        return
    say(f"built-in dimensions: extracting {', '.join(missing)} (first start only)")
    for name in missing:
        spec = ExtractionJobSpec(
            model=platform.settings.model, dimension=name, alias=PRODUCTION_ALIAS, author="steerlab up"
        )
        job = platform.jobs.servicer.submit(spec)
        _wait_for(platform.jobs, job.job_id, name, say)


def _wait_for(jobs: JobServer, job_id: str, name: str, say: Callable[[str], None]) -> None:
    started = time.monotonic()
    last_stage = ""
    while True:
        job = jobs.store.get(job_id)
        if job.stage != last_stage and job.stage:
            say(f"  {name}: {job.stage}")
            last_stage = job.stage
        if job.ended:
            break
        time.sleep(0.5)
    if job.state != "succeeded" or job.result is None:
        raise UnavailableError(f"extracting {name!r} failed (job {job_id}): {job.error or job.state}")
    say(f"  {name}: registered v{job.result.version} in {time.monotonic() - started:.0f} s")
