"""Extraction jobs end to end: the job service over gRPC, a real Redis broker, real
``steerlab worker`` processes (Celery), PostgreSQL for the job records and the registry."""

from __future__ import annotations

import base64
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from conftest import small_dataset
from service_support import ServerThread, fresh_postgres_database, open_store, require_redis

from steerlab.jobs.server import JobServer, JobServiceSettings
from steerlab.jobs.worker import QUEUE, WorkerSettings
from steerlab.serving import ServerSettings
from steerlab_api.v1 import jobs_pb2 as pb
from steerlab_client import ClientError, JobClient

BROKER = "redis://127.0.0.1:6379/9"  # a database of its own, emptied before the tests
LEASE_S = 3.0
RUN = uuid.uuid4().hex


def custom_dataset(name: str = "thrift", per_pole: int = 12) -> bytes:
    """A custom dimension (the cost prompts under another name), as an uploaded JSON Lines file.

    Its description is new on every test run: workers cache extractions by dataset content, and
    these tests need each job to really extract (to be killed or cancelled mid-way).
    """
    dataset = small_dataset(per_pole)
    header = {**dataset.dimension.to_dict(), "dimension": name, "description": f"test run {RUN}"}
    examples = [{"prompt": e.prompt, "completion": e.completion, "label": e.label} for e in dataset.examples]
    return "\n".join(json.dumps(line) for line in [header, *examples]).encode()


class WorkerProcess:
    """``steerlab worker`` in its own process group, as an operator would run it."""

    def __init__(self, database_url: str, registry: str, log: Path) -> None:
        env = {**os.environ, "STEERLAB_JOB_LEASE_S": str(LEASE_S)}
        self.log = log
        command = [sys.executable, "-m", "steerlab.cli", "worker", "--broker-url", BROKER]
        self.process = subprocess.Popen(
            [*command, "--database-url", database_url, "--registry", registry, "--loglevel", "INFO"],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while "ready." not in log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"the worker did not start:\n{log.read_text()}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes: nothing gets to clean up."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def job_service(database_url: str) -> Iterator[ServerThread]:
    require_redis()
    import redis

    redis.Redis.from_url(BROKER).flushdb()
    settings = JobServiceSettings(
        worker=WorkerSettings(database_url=database_url, broker_url=BROKER, job_lease_s=LEASE_S),
        server=ServerSettings(port=0, metrics_port=0),
        watch_poll_s=0.2,
    )
    jobs = JobServer(settings)
    jobs.start_background()
    thread = ServerThread(server=jobs.server, closing=jobs.close)
    yield thread
    thread.stop()


@pytest.fixture
def client(job_service: ServerThread) -> Iterator[JobClient]:
    with JobClient(job_service.target) as opened:
        yield opened


@pytest.fixture(scope="module")
def registry_service(database_url: str) -> Iterator[ServerThread]:
    """The registry the workers register results with, over its API (on the same database)."""
    thread = ServerThread(database_url)
    yield thread
    thread.stop()


@pytest.fixture
def start_worker(
    database_url: str, registry_service: ServerThread, tmp_path: Path
) -> Callable[[str], WorkerProcess]:
    def start(name: str) -> WorkerProcess:
        return WorkerProcess(database_url, registry_service.target, tmp_path / f"{name}.log")

    return start


@pytest.fixture
def worker(start_worker: Callable[[str], WorkerProcess]) -> Iterator[WorkerProcess]:
    started = start_worker("worker")
    yield started
    started.stop()


def registered_versions(database_url: str, dimension: str) -> list[int]:
    store = open_store(database_url)
    try:
        return [r.version for r in store.list_vector_sets(dimension=dimension).records]
    finally:
        store.close()


def wait_for(client: JobClient, job_id: str, condition: Any, timeout_s: float = 180) -> pb.Job:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(job_id)
        if condition(job):
            return job
        assert time.monotonic() < deadline, f"job never reached the expected state: {job}"
        time.sleep(0.2)


def test_submit_watch_and_the_result_lands_in_the_registry(
    client: JobClient, worker: WorkerProcess, tiny_model_dir: Path, database_url: str
) -> None:
    job = client.submit_extraction(
        str(tiny_model_dir),
        dataset=custom_dataset("thrift"),
        top_k=2,
        alias="production",
        labels={"team": "a"},
    )
    assert job.state == pb.JOB_STATE_QUEUED and job.dimension == "thrift"
    updates = list(client.watch(job.id, timeout_s=180))
    final = updates[-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED, final
    stages = {u.progress.stage for u in updates}  # watching samples: a fast stage may be missed
    assert stages <= {
        "queued",
        "starting",
        "loading",
        "activations",
        "probes",
        "range",
        "done",  # the core's last report, replaced by "registering" a moment later
        "registering",
        "succeeded",
    }
    percents = [u.progress.percent for u in updates if u.state == pb.JOB_STATE_RUNNING]
    assert percents == sorted(percents) and final.progress.percent == 100
    assert (final.result.dimension, final.result.version, final.result.alias) == ("thrift", 1, "production")
    assert final.attempts == 1 and final.HasField("end_time")

    store = open_store(database_url)
    try:
        record = store.get_vector_set("thrift", alias="production")
    finally:
        store.close()
    assert record.version == 1 and record.labels == {"team": "a", "job": job.id}
    assert len(record.metadata["selected_layers"]) == 2


def test_a_job_queued_after_the_database_dropped_every_connection_still_runs(
    client: JobClient, worker: WorkerProcess, tiny_model_dir: Path, database_url: str
) -> None:
    """Issue 20 (found by scripts/soak.py): PostgreSQL closed the worker's idle connections, and
    the next job's claim failed on a dead one; the message was spent and the job stayed queued
    forever. A dead connection is now replaced when drawn, and a claim the database refuses is
    tried again."""
    warm = client.submit_extraction(str(tiny_model_dir), dataset=custom_dataset("warm"), top_k=1)
    assert client.wait(warm.id, timeout_s=180).state == pb.JOB_STATE_SUCCEEDED  # the worker's pool is open
    database = database_url.rsplit("/", 1)[1]
    with psycopg.connect(database_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        others = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
        admin.execute(f"SELECT pg_terminate_backend(pid) FROM ({others}) AS connections", (database,))
    job = client.submit_extraction(str(tiny_model_dir), dataset=custom_dataset("after"), top_k=1)
    assert client.wait(job.id, timeout_s=180).state == pb.JOB_STATE_SUCCEEDED


def test_a_queued_job_whose_message_the_broker_lost_is_sent_again(
    client: JobClient, start_worker: Callable[[str], WorkerProcess], tiny_model_dir: Path
) -> None:
    """Issue 20 (found by scripts/soak.py): a job whose broker message was lost (a flushed or
    restarted Redis, a worker that died holding it) waited as queued forever."""
    import redis

    job = client.submit_extraction(str(tiny_model_dir), dataset=custom_dataset("lost"), top_k=1)
    assert redis.Redis.from_url(BROKER).delete(QUEUE) == 1  # no worker runs: its message is gone
    late = start_worker("late")
    try:
        final = client.wait(job.id, timeout_s=180)
    finally:
        late.stop()
    assert final.state == pb.JOB_STATE_SUCCEEDED and final.attempts == 1


def test_a_worker_killed_mid_job_is_replaced_and_the_job_registers_once(
    client: JobClient, database_url: str, start_worker: Callable[[str], WorkerProcess]
) -> None:
    first = start_worker("first")
    job = client.submit_extraction("smollm2-135m", dataset=custom_dataset("frugality", per_pole=16))
    running = wait_for(
        client, job.id, lambda j: j.state == pb.JOB_STATE_RUNNING and j.progress.stage == "activations"
    )
    assert running.attempts == 1
    first.kill()
    second = start_worker("second")
    try:
        final = client.wait(job.id, timeout_s=600)
    finally:
        second.stop()
    assert final.state == pb.JOB_STATE_SUCCEEDED, final
    assert final.attempts == 2
    assert registered_versions(database_url, "frugality") == [1]


def test_bad_requests_are_refused_and_failed_jobs_say_why(
    client: JobClient, worker: WorkerProcess, tiny_model_dir: Path, database_url: str
) -> None:
    before = client.list()
    with pytest.raises(ClientError) as invalid:
        client.submit_extraction(str(tiny_model_dir), dataset=b'{"dimension": "x"}\n{"prompt": 1}\n')
    assert invalid.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ClientError) as unknown_model:
        client.submit_extraction("no-such-model", dimension="cost")
    assert (
        unknown_model.value.code == grpc.StatusCode.NOT_FOUND
        and "no-such-model" in unknown_model.value.message
    )
    with pytest.raises(ClientError) as bad_method:
        client.submit_extraction(str(tiny_model_dir), dimension="cost", method="astrology")
    assert bad_method.value.code == grpc.StatusCode.INVALID_ARGUMENT
    overflowing = base64.urlsafe_b64encode(b"after:99999999999999999999999999").decode()
    with pytest.raises(ClientError, match="invalid page_token") as bad_token:
        client._call(client._stub.ListJobs, pb.ListJobsRequest(page_token=overflowing))
    assert bad_token.value.code == grpc.StatusCode.INVALID_ARGUMENT
    for bound in (math.nan, math.inf, 1e300, 1.0):
        with pytest.raises(ClientError, match="perplexity_bound must be above 1 and at most 10") as poison:
            client.submit_extraction(str(tiny_model_dir), dimension="cost", perplexity_bound=bound)
        assert poison.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ClientError, match="repetition_bound must be above 1 and at most 10") as poison:
        client.submit_extraction(str(tiny_model_dir), dimension="cost", repetition_bound=0.5)
    assert poison.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(client.list()) == len(before)  # nothing was queued

    too_deep = client.submit_extraction(str(tiny_model_dir), dataset=custom_dataset("depth"), top_k=99)
    failed = client.wait(too_deep.id, timeout_s=120)
    assert failed.state == pb.JOB_STATE_FAILED and "top-k must be between 1 and 4" in failed.error
    assert registered_versions(database_url, "depth") == []
    absent = client.wait(client.submit_extraction("/no/such/model", dimension="cost").id, timeout_s=120)
    assert absent.state == pb.JOB_STATE_FAILED and "no model '/no/such/model'" in absent.error

    for call in (client.get, client.cancel):
        with pytest.raises(ClientError) as missing:
            call("no-such-job")
        assert missing.value.code == grpc.StatusCode.NOT_FOUND


def test_a_retried_submission_queues_one_job(client: JobClient) -> None:
    before = len(client.list())
    dataset = custom_dataset("retried-submit")
    first = client.submit_extraction("smollm2-135m", dataset=dataset, request_id="submit-1")
    again = client.submit_extraction("smollm2-135m", dataset=dataset, request_id="submit-1")
    assert again.id == first.id and len(client.list()) == before + 1
    other = client.submit_extraction("smollm2-135m", dataset=dataset)  # a new request, a new job
    assert other.id != first.id
    for job in (first, other):
        assert client.cancel(job.id).state == pb.JOB_STATE_CANCELLED  # no worker is running


def test_cancelling_queued_and_running_jobs(
    client: JobClient, database_url: str, start_worker: Callable[[str], WorkerProcess]
) -> None:
    queued = client.submit_extraction("smollm2-135m", dataset=custom_dataset("queued-cancel"))
    assert client.cancel(queued.id).state == pb.JOB_STATE_CANCELLED  # no worker is running

    worker = start_worker("worker")
    try:
        running = client.submit_extraction("smollm2-135m", dataset=custom_dataset("running-cancel"))
        wait_for(client, running.id, lambda j: j.state == pb.JOB_STATE_RUNNING and j.progress.percent > 0)
        client.cancel(running.id)
        stopped = client.wait(running.id, timeout_s=120)
    finally:
        worker.stop()
    assert stopped.state == pb.JOB_STATE_CANCELLED and "nothing was registered" in stopped.progress.message
    assert client.get(queued.id).state == pb.JOB_STATE_CANCELLED  # its late message changed nothing
    assert registered_versions(database_url, "running-cancel") == []
    assert registered_versions(database_url, "queued-cancel") == []
    with pytest.raises(ClientError) as ended:
        client.cancel(stopped.id)
    assert ended.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_metrics_count_jobs_by_state(client: JobClient, job_service: ServerThread) -> None:
    time.sleep(2 * LEASE_S / 3)  # one monitor round
    with urllib.request.urlopen(job_service.metrics_url, timeout=10) as response:
        text = response.read().decode()
    succeeded = [
        line for line in text.splitlines() if line.startswith('steerlab_job_jobs{state="succeeded"}')
    ]
    assert succeeded and float(succeeded[0].split()[-1]) >= 1
    assert "steerlab_job_queue_length" in text
    assert 'steerlab_job_duration_seconds_count{state="succeeded"}' in text
    assert 'steerlab_job_requests_total{code="NOT_FOUND",method="GetJob"}' in text
