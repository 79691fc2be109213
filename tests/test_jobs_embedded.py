"""The embedded default: ``steerlab jobs serve`` on SQLite with no broker runs jobs itself;
the CLI submits, watches, lists and cancels; queued jobs survive a restart of the service;
a job run twice registers once. Results reach the registry only through its gRPC API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from service_support import ServerThread, ServiceProcess, free_port
from test_jobs_service import custom_dataset

from steerlab.jobs.spec import ExtractionJobSpec
from steerlab.jobs.store import FAILED, SUCCEEDED, JobStore
from steerlab.jobs.worker import WorkerContext, WorkerSettings, run_job
from steerlab.steering.config import ExtractionConfig
from steerlab.storage import open_database


def steerlab(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "steerlab.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "STEERLAB_HOME": str(home)},
    )


@pytest.fixture
def dataset_file(tmp_path: Path) -> Path:
    path = tmp_path / "thrift.jsonl"
    path.write_bytes(custom_dataset("thrift"))
    return path


def test_the_cli_runs_a_job_on_the_embedded_service_and_queued_jobs_survive_a_restart(
    tmp_path: Path, tiny_model_dir: Path, dataset_file: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    registry = ServiceProcess("registry", f"sqlite:///{tmp_path / 'registry.db'}", tmp_path, free_port())
    port = free_port()
    service = ServiceProcess("jobs", database_url, tmp_path, port, "--registry", registry.target)
    server = ["--server", service.target]
    try:
        assert "in-process worker" in service.banner
        submitted = steerlab(
            "jobs", "submit", *server, "--model", str(tiny_model_dir), "--dataset", str(dataset_file),
            "--top-k", "2", "--alias", "production", "--watch", home=tmp_path,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        lines = submitted.stdout.splitlines()
        assert lines[0].startswith("job ") and "queued: thrift" in lines[0]
        assert lines[1].startswith("[....") and "% queued" in lines[1], submitted.stdout
        assert lines[-2].startswith("[####") and "100% succeeded" in lines[-2]
        assert "succeeded, thrift" in lines[-1] and "thrift v1 (production), attempt 1" in lines[-1]
        job_id = lines[0].split()[1]

        listed = steerlab("jobs", "list", *server, home=tmp_path)
        assert listed.returncode == 0 and job_id in listed.stdout and "succeeded" in listed.stdout
        missing = steerlab("jobs", "get", *server, "no-such-job", home=tmp_path)
        assert missing.returncode == 1 and "NOT_FOUND: no job 'no-such-job'" in missing.stderr
        ended = steerlab("jobs", "cancel", *server, job_id, home=tmp_path)
        assert ended.returncode == 1 and "FAILED_PRECONDITION" in ended.stderr
    finally:
        assert service.stop() == 0

    # A job queued while the service was down (its message lost with the in-memory broker)
    # runs once the service is back.
    store = JobStore(open_database(database_url))
    spec, _ = ExtractionJobSpec(model=str(tiny_model_dir), dataset=dataset_file.read_text()).checked()
    waiting = store.create(spec)
    service = ServiceProcess("jobs", database_url, tmp_path, port, "--registry", registry.target)
    try:
        watched = steerlab("jobs", "watch", *server, waiting.job_id, home=tmp_path)
        assert watched.returncode == 0, watched.stderr
        assert store.get(waiting.job_id).state == SUCCEEDED
        assert store.get(waiting.job_id).result.version == 2  # type: ignore[union-attr]
    finally:
        service.stop()
        registry.stop()
        store.close()


def test_a_job_that_runs_twice_registers_one_version(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The first run registered, then its worker died before recording success; a second run
    must find that version instead of adding another."""
    registry = ServerThread(f"sqlite:///{tmp_path / 'registry.db'}")
    settings = WorkerSettings(
        database_url=f"sqlite:///{tmp_path / 'jobs.db'}", registry=registry.target, job_lease_s=30
    )
    context = WorkerContext(settings)
    spec, _ = ExtractionJobSpec(
        model=str(tiny_model_dir), dataset=custom_dataset("twice").decode(), config=ExtractionConfig(top_k=2)
    ).checked()
    job = context.jobs.create(spec)
    run_job(job.job_id, context)
    first = context.jobs.get(job.job_id)
    assert first.state == SUCCEEDED and first.result is not None and first.result.version == 1
    with context.jobs.database.transaction(write=True) as cursor:  # the success write was lost
        cursor.execute("UPDATE jobs SET state = %s, result = NULL WHERE job_id = %s", ("queued", job.job_id))
    run_job(job.job_id, context)
    second = context.jobs.get(job.job_id)
    assert second.state == SUCCEEDED and second.attempts == 2
    assert second.result == first.result
    assert [v.version for v in context.registry.list_vector_sets(dimension="twice")] == [1]
    registry.stop()


def test_a_job_whose_registry_cannot_be_reached_fails_and_says_where(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    port = free_port()  # nothing listens there
    settings = WorkerSettings(
        database_url=f"sqlite:///{tmp_path / 'jobs.db'}", registry=f"127.0.0.1:{port}", job_lease_s=30
    )
    context = WorkerContext(settings)
    dataset = custom_dataset("nowhere").decode()
    spec, _ = ExtractionJobSpec(
        model=str(tiny_model_dir), dataset=dataset, config=ExtractionConfig(top_k=2)
    ).checked()
    job = context.jobs.create(spec)
    run_job(job.job_id, context)
    failed = context.jobs.get(job.job_id)
    assert failed.state == FAILED and failed.result is None
    assert failed.error.startswith(f"the registry at 127.0.0.1:{port} refused the result: UNAVAILABLE")
