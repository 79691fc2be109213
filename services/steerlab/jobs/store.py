"""Job records on PostgreSQL or SQLite: the single source of truth about every job.

The broker only delivers "run job X" messages; whether X still needs running is decided here.
A worker *claims* a job before running it, which succeeds for one worker only: the job must be
queued, or running under a lease that expired (its worker stopped renewing it). The claim
counts an attempt; every later write by the worker names that attempt, so a worker that lost
its job (another claimed it after the lease ran out) can no longer change it. Every change runs
in one write transaction holding the job's lock.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from steerlab.steering.errors import FailedPreconditionError, NotFoundError
from steerlab.storage import Cursor, Database, migrate, pages
from steerlab.storage.requests import check_request_id

from .schema import COMPONENT, MIGRATIONS
from .spec import ExtractionJobSpec

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
ENDED = (SUCCEEDED, FAILED, CANCELLED)

_COLUMNS = (
    "seq, job_id, state, dimension, spec, stage, percent, message, result, error, attempts,"
    " cancel_requested, lease_until, created_at, started_at, finished_at, tenant"
)
_Result = TypeVar("_Result")


@dataclass(frozen=True)
class JobResult:
    """Where a succeeded job's vector set landed in the registry."""

    dimension: str
    model_digest: str
    version: int
    alias: str = ""


@dataclass(frozen=True)
class JobRecord:
    seq: int
    job_id: str
    state: str
    dimension: str
    spec: ExtractionJobSpec
    stage: str
    percent: float
    message: str
    result: JobResult | None
    error: str
    attempts: int
    cancel_requested: bool
    lease_until: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    tenant: str = ""  # "" without API keys

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def progress_key(self) -> tuple[Any, ...]:
        """What a watcher sees change."""
        return (self.state, self.stage, round(self.percent, 1), self.message, self.attempts, self.error)


class JobInterrupted(Exception):
    """The running job must stop: it was cancelled, or another worker now holds it."""

    def __init__(self, cancelled: bool, message: str) -> None:
        super().__init__(message)
        self.cancelled = cancelled


class JobStore:
    def __init__(self, database: Database) -> None:
        self.database = database
        migrate(database, COMPONENT, MIGRATIONS)

    def close(self) -> None:
        self.database.close()

    # -- what the job service does ----------------------------------------------------------

    def create(self, spec: ExtractionJobSpec, request_id: str = "", tenant: str = "") -> JobRecord:
        """Record a new queued job of ``tenant`` for a spec that was already checked.

        With ``request_id``, creating again with the same key returns the job the first call
        recorded."""
        check_request_id(request_id)
        job_id = uuid.uuid4().hex
        now = self._now()
        with self.database.transaction(write=True) as cursor:
            if request_id:
                self.database.lock(cursor, f"steerlab:job-request:{request_id}")
                existing = self._submitted(cursor, request_id)
                if existing is not None:
                    return existing
            cursor.execute(
                "INSERT INTO jobs (job_id, state, dimension, model, spec, stage, percent, message, error,"
                " attempts, cancel_requested, created_at, updated_at, request_id, tenant)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    *(job_id, QUEUED, spec.dimension, spec.model, spec.to_json()),
                    *("queued", 0.0, "waiting for a worker", "", 0, 0, now, now, request_id or None, tenant),
                ),
            )
            return self._get(cursor, job_id)

    def submitted(self, request_id: str) -> JobRecord | None:
        """The job created with ``request_id``, if there is one."""
        check_request_id(request_id)
        with self.database.transaction() as cursor:
            return self._submitted(cursor, request_id)

    def _submitted(self, cursor: Cursor, request_id: str) -> JobRecord | None:
        cursor.execute("SELECT job_id FROM jobs WHERE request_id = %s", (request_id,))
        row = cursor.fetchone()
        return self._get(cursor, row[0]) if row else None

    def get(self, job_id: str) -> JobRecord:
        with self.database.transaction() as cursor:
            return self._get(cursor, job_id)

    def list_jobs(
        self, state: str = "", page_size: int = 0, page_token: str = "", tenant: str | None = None
    ) -> tuple[list[JobRecord], str]:
        """Newest first (of ``tenant`` only, unless None); returns a page and the token of the
        next one ("" after the last)."""
        size = pages.page_size(page_size)
        after = pages.decode_page_token(page_token)
        conditions: list[str] = []
        params: list[object] = []
        if tenant is not None:
            conditions.append("tenant = %s")
            params.append(tenant)
        if state:
            conditions.append("state = %s")
            params.append(state)
        if after is not None:
            conditions.append("seq < %s")
            params.append(after)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        with self.database.transaction() as cursor:
            cursor.execute(
                f"SELECT {_COLUMNS} FROM jobs{where} ORDER BY seq DESC LIMIT %s", [*params, size + 1]
            )
            rows = cursor.fetchall()
        records = [self._record(row) for row in rows[:size]]
        next_token = pages.encode_page_token(records[-1].seq) if len(rows) > size else ""
        return records, next_token

    def cancel(self, job_id: str) -> JobRecord:
        """A queued job ends now; a running one is asked to stop at its next report."""

        def change(cursor: Cursor, job: JobRecord) -> None:
            if job.ended:
                raise FailedPreconditionError(f"job {job_id} has already {job.state}; nothing to cancel")
            if job.state == QUEUED:
                self._end(cursor, job_id, CANCELLED, "cancelled before it started")
            else:
                self._set(cursor, job_id, cancel_requested=1, message="cancelling")

        return self._change(job_id, change)

    def fail_queued(self, job_id: str, error: str) -> JobRecord:
        """End a job that never reached a worker (the broker refused it) as failed."""

        def change(cursor: Cursor, job: JobRecord) -> None:
            if job.state == QUEUED:
                self._set(cursor, job_id, error=error)
                self._end(cursor, job_id, FAILED, "failed")

        return self._change(job_id, change)

    def requeue_expired(self) -> list[str]:
        """Running jobs whose worker stopped renewing the lease go back to the queue.

        Returns their ids; the caller sends each a new broker message. A job that was asked to
        cancel ends as cancelled instead.
        """
        now = self._now()
        with self.database.transaction() as cursor:
            cursor.execute("SELECT job_id FROM jobs WHERE state = %s AND lease_until < %s", (RUNNING, now))
            expired = [row[0] for row in cursor.fetchall()]
        requeued = []
        for job_id in expired:
            with self.database.transaction(write=True) as cursor:
                self.database.lock(cursor, _lock(job_id))
                job = self._get(cursor, job_id)
                if job.state != RUNNING or job.lease_until is None or job.lease_until >= datetime.now(UTC):
                    continue
                if job.cancel_requested:
                    self._end(cursor, job_id, CANCELLED, "cancelled; its worker had stopped answering")
                    continue
                self._set(
                    cursor,
                    job_id,
                    state=QUEUED,
                    stage="queued",
                    lease_until=None,
                    message=f"its worker stopped answering during attempt {job.attempts}; queued again",
                )
                requeued.append(job_id)
        return requeued

    def queued(self) -> list[str]:
        with self.database.transaction() as cursor:
            cursor.execute("SELECT job_id FROM jobs WHERE state = %s ORDER BY seq", (QUEUED,))
            return [row[0] for row in cursor.fetchall()]

    def stranded(self, before: datetime) -> list[str]:
        """Queued jobs untouched since ``before`` (their broker message may be lost)."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "SELECT job_id FROM jobs WHERE state = %s AND updated_at < %s ORDER BY seq",
                (QUEUED, self.database.encode_time(before)),
            )
            return [row[0] for row in cursor.fetchall()]

    def touch(self, job_id: str) -> None:
        """Note that a queued job's message was just sent (again)."""
        with self.database.transaction(write=True) as cursor:
            self._set(cursor, job_id)

    def counts(self) -> dict[str, int]:
        """Jobs by state (every state, zeros included)."""
        with self.database.transaction() as cursor:
            cursor.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")
            found = {row[0]: int(row[1]) for row in cursor.fetchall()}
        return {state: found.get(state, 0) for state in STATES}

    def finished_since(self, moment: datetime) -> list[JobRecord]:
        """Jobs that ended after ``moment``, in the order they ended."""
        with self.database.transaction() as cursor:
            cursor.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE finished_at > %s ORDER BY finished_at",
                (self.database.encode_time(moment),),
            )
            return [self._record(row) for row in cursor.fetchall()]

    # -- what a worker does -----------------------------------------------------------------

    def claim(self, job_id: str, lease_s: float, max_attempts: int) -> JobRecord | None:
        """Start an attempt at ``job_id``; None if it has ended or another worker holds it."""
        claimed: list[JobRecord] = []

        def change(cursor: Cursor, job: JobRecord) -> None:
            if job.ended:
                return
            lease_live = job.lease_until is not None and job.lease_until >= datetime.now(UTC)
            if job.state == RUNNING and lease_live:
                return
            if job.cancel_requested:
                self._end(cursor, job_id, CANCELLED, "cancelled")
                return
            if job.attempts >= max_attempts:
                self._end(
                    cursor,
                    job_id,
                    FAILED,
                    f"gave up after {job.attempts} attempts: each time its worker stopped answering "
                    "(killed, out of memory, or over the hard time limit)",
                )
                return
            self._set(
                cursor,
                job_id,
                state=RUNNING,
                attempts=job.attempts + 1,
                lease_until=self._now(lease_s),
                stage="starting",
                percent=0.0,
                message=f"attempt {job.attempts + 1}",
                started_at=self.database.encode_time(job.started_at) if job.started_at else self._now(),
            )
            claimed.append(job)

        record = self._change(job_id, change)
        return record if claimed else None

    def report(
        self,
        job_id: str,
        attempt: int,
        lease_s: float,
        stage: str = "",
        percent: float = 0.0,
        message: str = "",
    ) -> None:
        """Renew the lease (and with ``stage``, record progress); raises :class:`JobInterrupted`
        if the job was cancelled or is no longer this attempt's."""

        def change(cursor: Cursor, job: JobRecord) -> None:
            self._check_owner(job, attempt)
            if job.cancel_requested:
                raise JobInterrupted(True, "cancelled")
            values: dict[str, Any] = {"lease_until": self._now(lease_s)}
            if stage:
                values.update(stage=stage, percent=percent, message=message)
            self._set(cursor, job_id, **values)

        self._change(job_id, change)

    def succeed(self, job_id: str, attempt: int, result: JobResult) -> JobRecord:
        def change(cursor: Cursor, job: JobRecord) -> None:
            self._check_owner(job, attempt)
            self._set(cursor, job_id, result=json.dumps(result.__dict__))
            self._end(
                cursor, job_id, SUCCEEDED, f"registered {result.dimension} v{result.version}", percent=100.0
            )

        return self._change(job_id, change)

    def fail(self, job_id: str, attempt: int, error: str) -> JobRecord:
        def change(cursor: Cursor, job: JobRecord) -> None:
            self._check_owner(job, attempt)
            self._set(cursor, job_id, error=error)
            self._end(cursor, job_id, FAILED, "failed")

        return self._change(job_id, change)

    def stop_cancelled(self, job_id: str, attempt: int) -> JobRecord:
        def change(cursor: Cursor, job: JobRecord) -> None:
            self._check_owner(job, attempt)
            self._end(cursor, job_id, CANCELLED, "cancelled while running; nothing was registered")

        return self._change(job_id, change)

    # -- helpers ----------------------------------------------------------------------------

    def _change(self, job_id: str, change: Callable[[Cursor, JobRecord], None]) -> JobRecord:
        with self.database.transaction(write=True) as cursor:
            self.database.lock(cursor, _lock(job_id))
            change(cursor, self._get(cursor, job_id))
            return self._get(cursor, job_id)

    @staticmethod
    def _check_owner(job: JobRecord, attempt: int) -> None:
        if job.state != RUNNING or job.attempts != attempt:
            raise JobInterrupted(
                False, f"attempt {attempt} no longer holds the job (now {job.state}, attempt {job.attempts})"
            )

    def _end(
        self, cursor: Cursor, job_id: str, state: str, message: str, percent: float | None = None
    ) -> None:
        values: dict[str, Any] = {"state": state, "stage": state, "message": message}
        values.update(lease_until=None, finished_at=self._now())
        if percent is not None:
            values["percent"] = percent
        self._set(cursor, job_id, **values)

    def _set(self, cursor: Cursor, job_id: str, **values: Any) -> None:
        values["updated_at"] = self._now()
        assignments = ", ".join(f"{column} = %s" for column in values)
        cursor.execute(f"UPDATE jobs SET {assignments} WHERE job_id = %s", (*values.values(), job_id))

    def _get(self, cursor: Cursor, job_id: str) -> JobRecord:
        cursor.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = %s", (job_id,))
        row = cursor.fetchone()
        if row is None:
            raise NotFoundError(f"no job {job_id!r}")
        return self._record(row)

    def _now(self, plus_s: float = 0.0) -> Any:
        return self.database.encode_time(datetime.now(UTC) + timedelta(seconds=plus_s))

    def _time(self, value: Any) -> datetime | None:
        return None if value is None else self.database.decode_time(value)

    def _record(self, row: Any) -> JobRecord:
        result = json.loads(row[8]) if row[8] else None
        return JobRecord(
            seq=int(row[0]),
            job_id=row[1],
            state=row[2],
            dimension=row[3],
            spec=ExtractionJobSpec.from_json(row[4]),
            stage=row[5],
            percent=float(row[6]),
            message=row[7],
            result=JobResult(**result) if result else None,
            error=row[9],
            attempts=int(row[10]),
            cancel_requested=bool(row[11]),
            lease_until=self._time(row[12]),
            created_at=self.database.decode_time(row[13]),
            started_at=self._time(row[14]),
            finished_at=self._time(row[15]),
            tenant=row[16],
        )


def _lock(job_id: str) -> str:
    return f"steerlab:job:{job_id}"
