"""Job records behave the same on PostgreSQL and SQLite: claims, leases, cancellation, listing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from service_support import fresh_postgres_database

from steerlab.jobs.spec import ExtractionJobSpec
from steerlab.jobs.store import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    JobInterrupted,
    JobResult,
    JobStore,
)
from steerlab.steering.config import ExtractionConfig
from steerlab.steering.errors import (
    DatasetError,
    ExtractionError,
    FailedPreconditionError,
    InvalidArgumentError,
    ModelLoadError,
    NotFoundError,
)
from steerlab.storage import open_database

SPEC = ExtractionJobSpec(model="smollm2-135m", dimension="cost")


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        opened = JobStore(open_database(f"sqlite:///{tmp_path / 'jobs.db'}"))
        yield opened
        opened.close()
    else:
        with fresh_postgres_database() as url:
            opened = JobStore(open_database(url))
            yield opened
            opened.close()


def test_a_job_runs_once_and_records_its_result(store: JobStore) -> None:
    job = store.create(SPEC)
    assert (job.state, job.attempts, job.stage) == (QUEUED, 0, "queued")
    with ThreadPoolExecutor(4) as pool:
        claims = list(pool.map(lambda _: store.claim(job.job_id, 30, 3), range(4)))
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1 and winners[0].state == RUNNING and winners[0].attempts == 1
    store.report(job.job_id, 1, 30, "probes", 40.0, "fitting")
    assert store.get(job.job_id).progress_key()[:3] == (RUNNING, "probes", 40.0)
    done = store.succeed(job.job_id, 1, JobResult("cost", "abc", 3, "production"))
    assert done.state == SUCCEEDED and done.result == JobResult("cost", "abc", 3, "production")
    assert done.finished_at is not None and done.percent == 100.0
    assert store.claim(job.job_id, 30, 3) is None  # a late duplicate message does nothing


def test_an_expired_lease_requeues_the_job_and_the_old_attempt_is_locked_out(store: JobStore) -> None:
    job = store.create(SPEC)
    assert store.claim(job.job_id, 0.2, 3) is not None
    assert store.requeue_expired() == []  # the lease is still live
    time.sleep(0.3)
    assert store.requeue_expired() == [job.job_id]
    requeued = store.get(job.job_id)
    assert requeued.state == QUEUED and "stopped answering" in requeued.message
    second = store.claim(job.job_id, 30, 3)
    assert second is not None and second.attempts == 2
    with pytest.raises(JobInterrupted) as lost:
        store.report(job.job_id, 1, 30, "probes", 50.0, "the first worker woke up")
    assert not lost.value.cancelled
    with pytest.raises(JobInterrupted):
        store.succeed(job.job_id, 1, JobResult("cost", "abc", 1))
    assert store.succeed(job.job_id, 2, JobResult("cost", "abc", 1)).state == SUCCEEDED


def test_a_job_whose_workers_keep_dying_is_given_up(store: JobStore) -> None:
    job = store.create(SPEC)
    for _ in range(2):
        assert store.claim(job.job_id, 0.01, 2) is not None
        time.sleep(0.05)
        store.requeue_expired()
    assert store.claim(job.job_id, 30, 2) is None
    failed = store.get(job.job_id)
    assert failed.state == FAILED and "gave up after 2 attempts" in failed.message


def test_cancelling(store: JobStore) -> None:
    queued = store.create(SPEC)
    assert store.cancel(queued.job_id).state == CANCELLED
    assert store.claim(queued.job_id, 30, 3) is None
    with pytest.raises(FailedPreconditionError, match="already cancelled"):
        store.cancel(queued.job_id)

    running = store.create(SPEC)
    store.claim(running.job_id, 30, 3)
    assert store.cancel(running.job_id).state == RUNNING  # until the worker's next report
    with pytest.raises(JobInterrupted) as stop:
        store.report(running.job_id, 1, 30, "probes", 40.0, "")
    assert stop.value.cancelled
    assert store.stop_cancelled(running.job_id, 1).state == CANCELLED


def test_failures_list_and_unknown_ids(store: JobStore) -> None:
    jobs = [store.create(SPEC) for _ in range(3)]
    store.claim(jobs[0].job_id, 30, 3)
    failed = store.fail(jobs[0].job_id, 1, "top-k must be between 1 and 30, got 99")
    assert failed.state == FAILED and failed.error.startswith("top-k")
    page, token = store.list_jobs(page_size=2)
    assert [j.job_id for j in page] == [jobs[2].job_id, jobs[1].job_id] and token
    rest, last = store.list_jobs(page_size=2, page_token=token)
    assert [j.job_id for j in rest] == [jobs[0].job_id] and last == ""
    assert [j.job_id for j in store.list_jobs(state=FAILED)[0]] == [jobs[0].job_id]
    assert store.counts() == {QUEUED: 2, RUNNING: 0, SUCCEEDED: 0, FAILED: 1, CANCELLED: 0}
    with pytest.raises(NotFoundError, match="no job"):
        store.get("does-not-exist")
    with pytest.raises(InvalidArgumentError):
        store.list_jobs(page_token="garbage")


def test_specs_are_checked_before_they_are_queued(tmp_path: Path) -> None:
    checked, dataset = SPEC.checked()
    assert checked.dimension == "cost" and len(dataset.examples) > 10
    restored = ExtractionJobSpec.from_json(checked.to_json())
    assert restored == checked
    with pytest.raises(ModelLoadError, match="no model 'no-such-model'"):
        ExtractionJobSpec(model="no-such-model", dimension="cost").checked()
    with pytest.raises(ModelLoadError, match="absolute path"):
        ExtractionJobSpec(model="models/mine", dimension="cost").checked()
    elsewhere, _ = ExtractionJobSpec(model="/on/the/workers/only", dimension="cost").checked()
    assert elsewhere.model == "/on/the/workers/only"  # looked for by the worker, not here
    with pytest.raises(DatasetError):
        ExtractionJobSpec(model="smollm2-135m", dataset='{"not": "a dataset"}\n').checked()
    with pytest.raises(ExtractionError, match="unknown method"):
        ExtractionJobSpec(
            model="smollm2-135m", dimension="cost", config=ExtractionConfig(method="x")
        ).checked()
    with pytest.raises(InvalidArgumentError, match="either a built-in dimension or a custom dataset"):
        ExtractionJobSpec(model="smollm2-135m").checked()
    with pytest.raises(InvalidArgumentError, match="alias"):
        ExtractionJobSpec(model="smollm2-135m", dimension="cost", alias="Not An Alias").checked()
