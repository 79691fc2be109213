"""Shared service plumbing: settings precedence, status mapping, metric names."""

from __future__ import annotations

import pytest

from steerlab.registry.server import RegistrySettings
from steerlab.serving import ServerSettings, status_name
from steerlab.serving.metrics import short_service_name
from steerlab.steering import DatasetError, SteeringError, VectorSetError, VectorSetMismatchError
from steerlab.steering.errors import DataLossError, NotFoundError


def test_flags_win_over_environment_which_wins_over_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = RegistrySettings.from_env()
    assert (defaults.server.port, defaults.server.metrics_port) == (50051, 9464)
    assert defaults.database_url.startswith("sqlite:///") and defaults.database_url.endswith("steerlab.db")

    monkeypatch.setenv("STEERLAB_DATABASE_URL", "postgresql://db.internal/steerlab")
    monkeypatch.setenv("STEERLAB_REGISTRY_PORT", "7000")
    monkeypatch.setenv("STEERLAB_REGISTRY_HOST", "0.0.0.0")
    monkeypatch.setenv("STEERLAB_REGISTRY_METRICS_PORT", "off")
    monkeypatch.setenv("STEERLAB_MAX_MESSAGE_BYTES", "1048576")
    from_env = RegistrySettings.from_env()
    assert from_env.database_url == "postgresql://db.internal/steerlab"
    assert from_env.server == ServerSettings(
        host="0.0.0.0", port=7000, metrics_port=None, max_message_bytes=1048576
    )

    flags = RegistrySettings.from_env(database_url="sqlite:////tmp/r.db", port=7001, metrics_port=9000)
    assert (flags.database_url, flags.server.port, flags.server.metrics_port) == (
        "sqlite:////tmp/r.db",
        7001,
        9000,
    )

    monkeypatch.setenv("STEERLAB_REGISTRY_PORT", "seven")
    with pytest.raises(ValueError, match="STEERLAB_REGISTRY_PORT must be an integer"):
        RegistrySettings.from_env()
    with pytest.raises(ValueError, match="port must be within"):
        ServerSettings(port=70000)


def test_errors_map_to_status_codes_that_say_why() -> None:
    assert status_name(NotFoundError("x")) == "NOT_FOUND"
    assert status_name(DataLossError("x")) == "DATA_LOSS"
    assert status_name(VectorSetMismatchError("x")) == "FAILED_PRECONDITION"
    assert status_name(VectorSetError("x")) == "INVALID_ARGUMENT"
    assert status_name(DatasetError("x")) == "INVALID_ARGUMENT"
    assert status_name(SteeringError("x")) == "INVALID_ARGUMENT"


def test_metric_names_follow_the_service_names() -> None:
    assert short_service_name("steerlab.v1.RegistryService") == "registry"
    assert short_service_name("steerlab.v1.InferenceService") == "inference"
    assert short_service_name("steerlab.v1.PreferenceSessionService") == "preference_session"


def test_every_service_reads_flags_then_variables_then_defaults_the_same_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from steerlab.allinone.server import PlatformSettings
    from steerlab.inference.server import InferenceSettings
    from steerlab.jobs.server import JobServiceSettings
    from steerlab.jobs.worker import WorkerSettings
    from steerlab.sessions.server import SessionSettings

    monkeypatch.setenv("STEERLAB_MAX_BATCH", "4")
    monkeypatch.setenv("STEERLAB_MAX_QUEUE", "9")
    monkeypatch.setenv("STEERLAB_INFERENCE_PORT", "7003")
    monkeypatch.setenv("STEERLAB_TOKEN", "secret")
    inference = InferenceSettings.from_env(max_batch=None, metrics_port=9100)
    assert (inference.engine.max_batch, inference.engine.max_queue) == (4, 9)
    assert (inference.server.port, inference.server.metrics_port, inference.server.token) == (
        7003,
        9100,
        "secret",
    )
    assert InferenceSettings.from_env(max_batch=2).engine.max_batch == 2  # the flag wins

    monkeypatch.setenv("STEERLAB_JOB_LEASE_S", "2.5")
    monkeypatch.setenv("STEERLAB_REGISTRY", "registry.internal:50051")
    jobs = JobServiceSettings.from_env(worker=WorkerSettings.from_env(broker_url="redis://r/0"))
    assert (jobs.worker.job_lease_s, jobs.worker.registry, jobs.worker.broker_url) == (
        2.5,
        "registry.internal:50051",
        "redis://r/0",
    )
    assert (jobs.server.port, jobs.worker.time_limit_s) == (50054, 3600 + 300)
    assert SessionSettings.from_env().registry == "registry.internal:50051"

    monkeypatch.setenv("STEERLAB_UP_PORT", "0")  # `steerlab up` fixes a free port at once
    assert PlatformSettings.from_env().server.port != 0

    monkeypatch.setenv("STEERLAB_JOB_LEASE_S", "soon")
    with pytest.raises(ValueError, match="STEERLAB_JOB_LEASE_S must be a number, got 'soon'"):
        WorkerSettings.from_env()
    monkeypatch.setenv("STEERLAB_JOB_LEASE_S", "-1")
    with pytest.raises(
        ValueError, match=r"job_lease_s \(STEERLAB_JOB_LEASE_S\): Input should be greater than 0"
    ):
        WorkerSettings.from_env()
    monkeypatch.setenv("STEERLAB_LEARN_METHOD", "guess")
    with pytest.raises(ValueError, match=r"STEERLAB_LEARN_METHOD\): Input should be 'intent' or 'paper'"):
        SessionSettings.from_env()
