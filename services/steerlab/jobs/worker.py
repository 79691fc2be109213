"""Celery workers that run extraction jobs and store the results in the registry.

Reliability comes from the job records, not from the broker alone:

- the task is acknowledged late (``task_acks_late``): only after the job's result is stored,
  and a worker process that dies mid-job leaves its message unacknowledged
  (``task_reject_on_worker_lost``);
- a worker *claims* the job before running it and renews a lease while it runs; the job service
  puts a job whose lease ran out back on the queue, so a killed worker's job is run again by
  another worker within about one lease, whatever the broker does with the old message;
- the result is registered through the registry's gRPC API (``--registry``), never its tables,
  with the job id as the request id: a job that runs twice (its first worker died after
  registering) registers one version, not two;
- a job that fails says why and registers nothing; one whose workers keep dying is given up
  after ``job_max_attempts``.

Time limits: ``job_soft_time_limit_s`` ends a job as failed with a clear reason; ``time_limit_s``
(later) kills the worker process if the job ignores the soft limit. The broker's visibility
timeout (Redis) must outlast the hard limit, or Redis would hand a still-running job to a
second worker; it is set to the hard limit plus ten minutes. The in-process worker of the
embedded default runs jobs in a thread and enforces no time limits.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Self

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from pydantic import Field, model_validator

from steerlab.serving import SteerLabSettings
from steerlab.settings import default_address
from steerlab.steering.datasets import Dimension
from steerlab.steering.errors import NotFoundError, SteerLabError, UnavailableError
from steerlab.storage import open_database, resolve_database_url
from steerlab_client import AlreadyExists, ClientError, RegistryClient

from .store import JobInterrupted, JobRecord, JobResult, JobStore

log = logging.getLogger(__name__)

EXTRACT_TASK = "steerlab.jobs.extract"
QUEUE = "steerlab.jobs"
# Tries of a job's message while the database is unavailable, backing off to 30 s (about 10 min).
UNAVAILABLE_RETRIES = 25
IN_PROCESS_BROKER = "memory://localhost/"  # with a host: kombu warns about none given


class WorkerSettings(SteerLabSettings):
    """How jobs are delivered and run; shared by the job service and its workers.

    ``STEERLAB_DATABASE_URL``, ``STEERLAB_REGISTRY``, ``STEERLAB_BROKER_URL`` and
    ``STEERLAB_JOB_LEASE_S``, ``_SOFT_TIME_LIMIT_S``, ``_TIME_LIMIT_S``, ``_MAX_ATTEMPTS``, ``_DEVICE``.
    """

    database_url: str = Field(default_factory=resolve_database_url)
    # The registry service (HOST:PORT) that results are registered with, over its gRPC API.
    registry: str = Field(default_factory=lambda: default_address("registry"))
    # The credential sent to the registry (STEERLAB_TOKEN): the shared token, or an operator's API key.
    token: str = Field(default="", repr=False)
    # "" means the embedded default: an in-process broker, jobs run by the job service itself.
    broker_url: str = ""
    job_lease_s: float = Field(default=30.0, gt=0)
    job_soft_time_limit_s: int = Field(default=3600, gt=0)
    # 0: the soft limit plus five minutes.
    job_time_limit_s: int = Field(default=0, ge=0)
    job_max_attempts: int = Field(default=3, ge=1)
    job_device: str = "cpu"

    @model_validator(mode="after")
    def _limits_in_order(self) -> Self:
        if 0 < self.job_time_limit_s <= self.job_soft_time_limit_s:
            raise ValueError("the soft time limit must be below the hard one")
        return self

    @property
    def time_limit_s(self) -> int:
        """The hard limit: after it, the worker process is killed."""
        return self.job_time_limit_s or self.job_soft_time_limit_s + 300

    @property
    def visibility_timeout_s(self) -> int:
        return self.time_limit_s + 600


def create_celery(settings: WorkerSettings) -> Celery:
    """The Celery app: the job service sends with it, workers consume with it."""
    app = Celery("steerlab", broker=settings.broker_url or IN_PROCESS_BROKER, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.job_soft_time_limit_s,
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

    # A database or registry that is briefly away must not lose the job: the message is tried
    # again (claiming is idempotent) instead of being acknowledged as done.
    @app.task(  # type: ignore[untyped-decorator]
        name=EXTRACT_TASK,
        autoretry_for=(UnavailableError,),
        retry_backoff=True,
        retry_backoff_max=30,
        max_retries=UNAVAILABLE_RETRIES,
    )
    def extract_job(job_id: str) -> None:
        run_job(job_id, context_for(settings))

    return app


def worker_app(settings: WorkerSettings) -> Celery:
    """The app a separate worker process runs: it needs a real broker to share with the service."""
    if not settings.broker_url:
        raise ValueError("a worker needs a broker: pass --broker-url or set STEERLAB_BROKER_URL")
    return create_celery(settings)


class WorkerContext:
    """A worker process's job store, registry client and most recently loaded model."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.jobs = JobStore(open_database(settings.database_url))
        # A vector set file can take a while to send; the default retries ride out a restart.
        self.registry = RegistryClient(settings.registry, timeout_s=120.0, token=settings.token)
        self._model: Any = None
        self._model_lock = threading.Lock()

    def model(self, name: str) -> Any:
        from transformers.utils import logging as transformers_logging

        from steerlab.steering.models import load_model

        transformers_logging.disable_progress_bar()  # bars are noise in a worker's log
        with self._model_lock:
            if self._model is None or self._model.name != name:
                self._model = None  # free the old one before loading the next
                self._model = load_model(name, device=self.settings.job_device)
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
        job = jobs.claim(job_id, settings.job_lease_s, settings.job_max_attempts)
    except NotFoundError:
        log.warning("job %s: no such job in %s; message dropped", job_id, jobs.database.description)
        return
    if job is None:
        log.info("job %s: nothing to do (ended, cancelled, or held by another worker)", job_id)
        return
    attempt = job.attempts
    log.info("job %s: attempt %d, %s on %s", job_id, attempt, job.dimension, job.spec.model)
    try:
        with Lease(jobs, job_id, attempt, settings.job_lease_s) as lease:
            try:
                result = extract_and_register(job, context, lease)
            except SoftTimeLimitExceeded:
                jobs.fail(job_id, attempt, f"over the soft time limit of {settings.job_soft_time_limit_s} s")
            except SteerLabError as exc:
                jobs.fail(job_id, attempt, str(exc))
            except ClientError as exc:
                jobs.fail(job_id, attempt, f"the registry at {settings.registry} refused the result: {exc}")
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
    ensure_dimension(context.registry, dataset.dimension, job.tenant)
    pushed = context.registry.push(
        vector_set.to_bytes(),
        labels={**spec.labels, "job": job.job_id},
        author=spec.author or "steerlab-jobs",
        request_id=job.job_id,
    )
    digest = pushed.model.weights_digest
    if spec.alias:
        context.registry.set_alias(
            pushed.dimension, pushed.version, spec.alias, model=digest, updated_by="job"
        )
    return JobResult(pushed.dimension, digest, pushed.version, spec.alias)


def ensure_dimension(registry: RegistryClient, dimension: Dimension, tenant: str) -> None:
    """Register a custom dataset's dimension on first use, as the job's tenant's (the worker's
    key is the services' admin key); one that exists already is kept (the registry refuses a
    vector set whose poles differ from its dimension's)."""
    with contextlib.suppress(AlreadyExists):
        registry.create_dimension(
            dimension.name, dimension.negative_pole, dimension.positive_pole, dimension.description, tenant
        )
