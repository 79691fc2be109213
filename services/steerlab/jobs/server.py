"""Running the job service: settings, the broker connection, the lease monitor, and metrics.

With a broker URL (Redis in production), jobs go to separate ``steerlab worker`` processes.
Without one (the embedded default), the job service runs an in-process Celery worker on an
in-memory broker: the same task code, no server to install.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from amqp.exceptions import ChannelError
from celery import Celery
from kombu.utils.url import maybe_sanitize_url
from prometheus_client import CollectorRegistry, Gauge, Histogram
from pydantic import Field

from steerlab.serving import GrpcServer, ServerSettings, ServiceBinding, SteerLabSettings
from steerlab.serving.auth import open_key_store
from steerlab.storage import open_database
from steerlab_api.v1 import jobs_pb2_grpc

from .service import AUDITED, ROLES, SERVICE_NAME, JobServicer
from .store import QUEUED, STATES, JobStore
from .worker import EXTRACT_TASK, QUEUE, WorkerSettings, create_celery

log = logging.getLogger(__name__)

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


class JobServiceSettings(SteerLabSettings):
    """``steerlab jobs serve``: the variables of :class:`WorkerSettings` and ``STEERLAB_JOBS_*``."""

    service: ClassVar[str] = "jobs"

    worker: WorkerSettings = Field(default_factory=lambda: WorkerSettings())
    server: ServerSettings = Field(default_factory=ServerSettings)
    watch_poll_s: float = Field(default=0.5, gt=0)

    @property
    def monitor_interval_s(self) -> float:
        """How often expired leases are looked for and the gauges refreshed."""
        return min(5.0, self.worker.job_lease_s / 3)


class JobMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.jobs = Gauge("steerlab_job_jobs", "Jobs by state", ["state"], registry=registry)
        self.queue_length = Gauge("steerlab_job_queue_length", "Jobs waiting for a worker", registry=registry)
        self.duration = Histogram(
            "steerlab_job_duration_seconds",
            "Time from a job's first start to its end, by final state",
            ["state"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )


NOT_FOUND = "404"  # the reply code kombu gives (as text, from Redis) for a queue that is not there


class LeaseMonitor:
    """Requeues jobs whose worker stopped renewing its lease, sends again the messages of queued
    jobs the broker lost, and refreshes the job metrics."""

    def __init__(
        self, store: JobStore, celery: Celery, metrics: JobMetrics, interval_s: float, stranded_after_s: float
    ) -> None:
        self.store, self.celery, self.metrics, self.interval_s = store, celery, metrics, interval_s
        self.stranded_after_s = stranded_after_s
        self._since = datetime.now(UTC)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-monitor", daemon=True)

    def start(self) -> None:
        # Messages for queued jobs may have been lost with an in-memory broker or a flushed
        # Redis; sending again is harmless, since only one worker can claim a job.
        for job_id in self.store.queued():
            self.dispatch(job_id)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def dispatch(self, job_id: str) -> None:
        self.celery.send_task(EXTRACT_TASK, args=[job_id])

    def check(self) -> None:
        for job_id in self.store.requeue_expired():
            log.warning("job %s: its worker stopped answering; queued again", job_id)
            self.dispatch(job_id)
        self.send_stranded()
        counts = self.store.counts()
        for state in STATES:
            self.metrics.jobs.labels(state).set(counts[state])
        self.metrics.queue_length.set(counts[QUEUED])
        for job in self.store.finished_since(self._since):
            assert job.finished_at is not None
            started = job.started_at or job.created_at
            self.metrics.duration.labels(job.state).observe((job.finished_at - started).total_seconds())
            self._since = max(self._since, job.finished_at)

    def send_stranded(self) -> None:
        """A queued job whose broker message is gone (a worker that died before claiming it, a
        restarted or flushed Redis) would wait forever. When the broker holds no waiting message
        (with one message reserved per worker, a waiting job's message would be there), a job
        queued for ``stranded_after_s`` is sent again; a spare message is dropped on claim."""
        stranded = self.store.stranded(datetime.now(UTC) - timedelta(seconds=self.stranded_after_s))
        if not stranded or self._broker_waiting() != 0:  # the broker is asked only when it matters
            return
        for job_id in stranded:
            log.warning("job %s: queued with no message waiting in the broker; sent again", job_id)
            self.store.touch(job_id)
            self.dispatch(job_id)

    def _broker_waiting(self) -> int | None:
        """Messages waiting in the jobs queue; None when the broker cannot say."""
        try:
            with self.celery.connection_for_read() as connection:
                declared = connection.default_channel.queue_declare(QUEUE, passive=True)
                return int(declared.message_count)
        except Exception as exc:
            if isinstance(exc, ChannelError) and str(exc.reply_code) == NOT_FOUND:
                return 0  # never declared, or emptied: nothing waits in it
            log.debug("could not count the broker's waiting messages", exc_info=True)
            return None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # the database may be back on the next round
                log.exception("the lease monitor's check failed")


class InProcessWorker:
    """A Celery worker on a thread of this process, for the embedded default (no broker)."""

    def __init__(self, celery: Celery) -> None:
        celery.finalize()
        self._controller: Any = celery.WorkController(
            app=celery,
            pool_cls="solo",
            concurrency=1,
            hostname="steerlab-embedded@localhost",
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel="WARNING",
        )
        self._thread = threading.Thread(target=self._controller.start, name="jobs-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if not self._thread.is_alive():  # never started, or already ended
            return
        self._controller.stop()
        self._thread.join(timeout=60)


class JobServer:
    """The gRPC server, the lease monitor and (embedded) the worker; ``start_background()``
    before serving, ``close()`` after."""

    def __init__(
        self, settings: JobServiceSettings, metrics_registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.store = JobStore(open_database(settings.worker.database_url))
        self.celery = create_celery(settings.worker)
        registry = metrics_registry or CollectorRegistry()
        self.monitor = LeaseMonitor(
            self.store,
            self.celery,
            JobMetrics(registry),
            settings.monitor_interval_s,
            stranded_after_s=2 * settings.worker.job_lease_s,
        )
        self.servicer = JobServicer(self.store, self.monitor.dispatch, settings.watch_poll_s)
        self.binding = ServiceBinding(
            SERVICE_NAME, self.servicer, jobs_pb2_grpc.add_JobServiceServicer_to_server, ROLES, AUDITED
        )
        keys = open_key_store(settings.server, settings.worker.database_url)
        self.server = GrpcServer([self.binding], settings.server, metrics_registry=registry, keys=keys)
        self.worker = InProcessWorker(self.celery) if not settings.worker.broker_url else None

    def start_background(self) -> None:
        if self.worker is not None:
            self.worker.start()
        self.monitor.start()

    def close(self) -> None:
        self.monitor.stop()
        if self.worker is not None:
            self.worker.stop()
        self.store.close()

    def describe(self) -> str:
        worker = self.settings.worker
        broker = (
            maybe_sanitize_url(worker.broker_url) if worker.broker_url else "in-process worker, no broker"
        )
        return f"database {self.store.database.description}; broker {broker}; lease {worker.job_lease_s:g} s"
