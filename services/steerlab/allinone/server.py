"""``steerlab up``: every service in one process, on one port, with the embedded stores.

The registry, session, job and inference services are the same servicers that run as separate
processes in production; here they share one gRPC server, one ``/metrics`` endpoint and one
database (SQLite in the data directory unless ``--database-url`` says otherwise). Extraction
jobs run on an in-process Celery worker. The session and inference services reach each other
through the server's own port, exactly as they would across the network.

On first start the five built-in dimensions are extracted for the model by extraction jobs and
registered under the alias ``production``; later starts find them in the registry.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from prometheus_client import CollectorRegistry

from steerlab.inference.server import InferenceServer, InferenceSettings, build_inference_server
from steerlab.jobs.server import JobServer, JobServiceSettings
from steerlab.jobs.spec import ExtractionJobSpec
from steerlab.jobs.worker import WorkerSettings
from steerlab.registry.server import registry_binding
from steerlab.registry.store import RegistryStore
from steerlab.serving import GrpcServer, ServerSettings
from steerlab.sessions.learn import learn_method_from_env, make_interpreter
from steerlab.sessions.manager import SessionManager
from steerlab.sessions.server import SessionSettings, open_session_manager, session_binding
from steerlab.settings import DEFAULT_PORTS, PRODUCTION_ALIAS, int_env, steerlab_home
from steerlab.steering.catalog import BUILTIN_MODELS
from steerlab.steering.datasets import BUILTIN_DIMENSIONS, builtin_dimensions
from steerlab.steering.errors import UnavailableError
from steerlab.storage import open_database

log = logging.getLogger(__name__)

DEFAULT_PORT, DEFAULT_METRICS_PORT = DEFAULT_PORTS["up"]


@dataclass(frozen=True)
class PlatformSettings:
    model: str = "smollm2-135m"
    data_dir: Path = field(default_factory=lambda: steerlab_home() / "platform")
    database_url: str = ""  # empty: SQLite in data_dir
    max_batch: int | None = None
    learn_method: str = field(default_factory=learn_method_from_env)  # intent or paper
    server: ServerSettings = field(
        default_factory=lambda: ServerSettings(port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT)
    )

    @classmethod
    def from_env(
        cls,
        model: str | None = None,
        data_dir: str | None = None,
        database_url: str | None = None,
        max_batch: int | None = None,
        host: str | None = None,
        port: int | None = None,
        metrics_port: int | None = None,
        learn_method: str | None = None,
    ) -> PlatformSettings:
        """Flags win over ``STEERLAB_MODEL``, ``STEERLAB_DATA_DIR``, ``STEERLAB_DATABASE_URL``,
        ``STEERLAB_MAX_BATCH``, ``STEERLAB_LEARN_METHOD``, ``STEERLAB_TOKEN`` and the
        ``STEERLAB_UP_*`` server variables."""
        server = ServerSettings.from_env(
            "up", DEFAULT_PORT, DEFAULT_METRICS_PORT, host=host, port=port, metrics_port=metrics_port
        )
        if server.port == 0:  # the services call each other through this port, so fix it now
            server = replace(server, port=free_port(server.host))
        model = model or os.environ.get("STEERLAB_MODEL", "smollm2-135m")
        chosen_dir = data_dir or os.environ.get("STEERLAB_DATA_DIR")
        return cls(
            model=model if model in BUILTIN_MODELS else str(Path(model).resolve()),
            data_dir=Path(chosen_dir).resolve() if chosen_dir else steerlab_home() / "platform",
            database_url=database_url or os.environ.get("STEERLAB_DATABASE_URL", ""),
            max_batch=max_batch or int_env("STEERLAB_MAX_BATCH", 0) or None,
            learn_method=learn_method or learn_method_from_env(),
            server=server,
        )

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'steerlab.db'}"

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

    def close(self) -> None:
        self.jobs.close()
        self.inference.close()
        self.sessions.store.close()
        self.registry.close()

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
    internal = replace(settings.server, port=0, metrics_port=None)  # only their token matters
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
        JobServiceSettings(worker=WorkerSettings(database_url=settings.database), server=internal), metrics
    )
    inference_settings = InferenceSettings(
        model=settings.model,
        registry=settings.own_address,
        sessions=settings.own_address,
        server=internal,
    )
    if settings.max_batch:
        engine = replace(inference_settings.engine, max_batch=settings.max_batch)
        inference_settings = replace(inference_settings, engine=engine)
    inference = build_inference_server(inference_settings, start_engine=False, metrics_registry=metrics)
    bindings = [
        registry_binding(registry),
        session_binding(sessions),
        jobs.binding,
        *inference.server.services,
    ]
    server = GrpcServer(bindings, settings.server, metrics)
    return Platform(settings, server, inference, jobs, registry, sessions)


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
