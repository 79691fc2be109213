"""Celery workers that run extraction jobs and store the results in the registry.

Reliability comes from the job records, not from the broker alone:

- the task is acknowledged late (``task_acks_late``): only after the job's result is stored,
  and a worker process that dies mid-job leaves its message unacknowledged
  (``task_reject_on_worker_lost``);
- a worker *claims* the job before running it and renews a lease while it runs; the job service
  puts a job whose lease ran out back on the queue, so a killed worker's job is run again by
  another worker within about one lease, whatever the broker does with the old message;
- the registry write carries the job id as its idempotency key, so a job that runs twice (its
  first worker died after registering) registers one version, not two;
- a job that fails says why and registers nothing; one whose workers keep dying is given up
  after ``max_attempts``.

Time limits: ``soft_time_limit_s`` ends a job as failed with a clear reason; ``time_limit_s``
(later) kills the worker process if the job ignores the soft limit. The broker's visibility
timeout (Redis) must outlast the hard limit, or Redis would hand a still-running job to a
second worker; it is set to the hard limit plus ten minutes. The in-process worker of the
embedded default runs jobs in a thread and enforces no time limits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded

from steerlab.registry.store import RegistryStore
from steerlab.settings import chosen, int_env
from steerlab.steering.datasets import Dimension
from steerlab.steering.errors import AlreadyExistsError, NotFoundError, SteerLabError
from steerlab.storage import open_database, resolve_database_url

from .store import JobInterrupted, JobRecord, JobResult, JobStore

log = logging.getLogger(__name__)

EXTRACT_TASK = "steerlab.jobs.extract"
QUEUE = "steerlab.jobs"
IN_PROCESS_BROKER = "memory://localhost/"  # with a host: kombu warns about none given


@dataclass(frozen=True)
class WorkerSettings:
    """How jobs are delivered and run; shared by the job service and its workers."""

    database_url: str = field(default_factory=resolve_database_url)
    # "" means the embedded default: an in-process broker, jobs run by the job service itself.
    broker_url: str = ""
    lease_s: float = 30.0
    soft_time_limit_s: int = 3600
    time_limit_s: int = 3900
    max_attempts: int = 3
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.lease_s <= 0 or self.max_attempts < 1:
            raise ValueError("the lease must be positive and max_attempts at least 1")
        if not 0 < self.soft_time_limit_s < self.time_limit_s:
            raise ValueError("the soft time limit must be positive and below the hard one")

    @property
    def visibility_timeout_s(self) -> int:
        return self.time_limit_s + 600

    @classmethod
    def from_env(cls, database_url: str | None = None, broker_url: str | None = None) -> WorkerSettings:
        """Arguments win over ``STEERLAB_DATABASE_URL``, ``STEERLAB_BROKER_URL``,
        ``STEERLAB_JOB_LEASE_S``, ``STEERLAB_JOB_SOFT_TIME_LIMIT_S``, ``STEERLAB_JOB_TIME_LIMIT_S``,
        ``STEERLAB_JOB_MAX_ATTEMPTS`` and ``STEERLAB_JOB_DEVICE``."""
        soft = int_env("STEERLAB_JOB_SOFT_TIME_LIMIT_S", cls.soft_time_limit_s)
        return cls(
            database_url=resolve_database_url(database_url),
            broker_url=chosen(broker_url, "STEERLAB_BROKER_URL", ""),
            lease_s=float(os.environ.get("STEERLAB_JOB_LEASE_S") or cls.lease_s),
            soft_time_limit_s=soft,
            time_limit_s=int_env("STEERLAB_JOB_TIME_LIMIT_S", soft + 300),
            max_attempts=int_env("STEERLAB_JOB_MAX_ATTEMPTS", cls.max_attempts),
            device=os.environ.get("STEERLAB_JOB_DEVICE", cls.device),
        )


def create_celery(settings: WorkerSettings) -> Celery:
    """The Celery app: the job service sends with it, workers consume with it."""
    app = Celery("steerlab", broker=settings.broker_url or IN_PROCESS_BROKER, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.soft_time_limit_s,
        task_time_limit=settings.time_limit_s,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        task_default_queue=QUEUE,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )

    @app.task(name=EXTRACT_TASK)  # type: ignore[untyped-decorator]
    def extract_job(job_id: str) -> None:
        run_job(job_id, context_for(settings))

    return app


def worker_app(settings: WorkerSettings) -> Celery:
    """The app a separate worker process runs: it needs a real broker to share with the service."""
    if not settings.broker_url:
        raise ValueError("a worker needs a broker: pass --broker-url or set STEERLAB_BROKER_URL")
    return create_celery(settings)


class WorkerContext:
    """A worker process's connections and its most recently loaded model."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        database = open_database(settings.database_url)
        self.jobs = JobStore(database)
        self.registry = RegistryStore(database)
        self._model: Any = None
        self._model_lock = threading.Lock()

    def model(self, name: str) -> Any:
        from transformers.utils import logging as transformers_logging

        from steerlab.steering.models import load_model

        transformers_logging.disable_progress_bar()  # bars are noise in a worker's log
        with self._model_lock:
            if self._model is None or self._model.name != name:
                self._model = None  # free the old one before loading the next
                self._model = load_model(name, device=self.settings.device)
            return self._model


_contexts: dict[WorkerSettings, WorkerContext] = {}
_contexts_lock = threading.Lock()


def context_for(settings: WorkerSettings) -> WorkerContext:
    """One context per process and settings, made on first use (after a prefork worker forks)."""
    with _contexts_lock:
        if settings not in _contexts:
            _contexts[settings] = WorkerContext(settings)
        return _contexts[settings]


class Lease:
    """Renews a claimed job's lease from a background thread while the job runs."""

    def __init__(self, jobs: JobStore, job_id: str, attempt: int, lease_s: float) -> None:
        self.jobs, self.job_id, self.attempt, self.lease_s = jobs, job_id, attempt, lease_s
        self.interrupted: JobInterrupted | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{job_id[:8]}", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.jobs.report(self.job_id, self.attempt, self.lease_s)
            except JobInterrupted as exc:
                self.interrupted = exc
                return
            except Exception:  # the database may be back by the next renewal
                log.exception("could not renew the lease of job %s", self.job_id)

    def progress(self, stage: str, percent: float, message: str) -> None:
        """Record progress; raises :class:`JobInterrupted` if the job must stop."""
        if self.interrupted is not None:
            raise self.interrupted
        self.jobs.report(self.job_id, self.attempt, self.lease_s, stage, percent, message)


def run_job(job_id: str, context: WorkerContext) -> None:
    """Claim and run one extraction job; every outcome is written to its record."""
    settings, jobs = context.settings, context.jobs
    try:
        job = jobs.claim(job_id, settings.lease_s, settings.max_attempts)
    except NotFoundError:
        log.warning("job %s: no such job in %s; message dropped", job_id, jobs.database.description)
        return
    if job is None:
        log.info("job %s: nothing to do (ended, cancelled, or held by another worker)", job_id)
        return
    attempt = job.attempts
    log.info("job %s: attempt %d, %s on %s", job_id, attempt, job.dimension, job.spec.model)
    try:
        with Lease(jobs, job_id, attempt, settings.lease_s) as lease:
            try:
                result = extract_and_register(job, context, lease)
            except SoftTimeLimitExceeded:
                jobs.fail(job_id, attempt, f"over the soft time limit of {settings.soft_time_limit_s} s")
            except SteerLabError as exc:
                jobs.fail(job_id, attempt, str(exc))
            except JobInterrupted:
                raise
            except Exception as exc:
                log.exception("job %s failed", job_id)
                jobs.fail(job_id, attempt, f"internal error: {type(exc).__name__}: {exc}")
            else:
                jobs.succeed(job_id, attempt, result)
    except JobInterrupted as exc:
        if exc.cancelled:
            jobs.stop_cancelled(job_id, attempt)
        log.info("job %s: attempt %d stopped: %s", job_id, attempt, exc)


def extract_and_register(job: JobRecord, context: WorkerContext, lease: Lease) -> JobResult:
    from steerlab.steering.cache import extract_cached

    spec = job.spec
    lease.progress("loading", 0.0, spec.model)
    dataset = spec.load_dataset()
    lm = context.model(spec.model)

    def on_progress(stage: str, fraction: float, message: str) -> None:
        lease.progress(stage, 95.0 * fraction, message)

    # The worker's extraction cache: a job run again (or the same data and settings submitted
    # again, e.g. the built-in dimensions on every fresh `steerlab up`) takes seconds.
    vector_set = extract_cached(lm, dataset, spec.config, on_progress=on_progress)
    lease.progress("registering", 95.0, "storing the vector set in the registry")
    ensure_dimension(context.registry, dataset.dimension)
    record = context.registry.create_vector_set(
        vector_set,
        author=spec.author or "steerlab-jobs",
        labels={**spec.labels, "job": job.job_id},
        request_id=job.job_id,
    )
    if spec.alias:
        context.registry.set_alias(record.dimension, record.model_digest, spec.alias, record.version, "job")
    return JobResult(record.dimension, record.model_digest, record.version, spec.alias)


def ensure_dimension(registry: RegistryStore, dimension: Dimension) -> None:
    """Register a custom dataset's dimension on first use (a differing one is refused later)."""
    try:
        registry.get_dimension(dimension.name)
    except NotFoundError:
        with contextlib.suppress(AlreadyExistsError):  # another worker registered it just now
            registry.create_dimension(dimension)
