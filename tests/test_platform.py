"""The SDK end to end against `steerlab up` on a real socket: sessions, steered streaming, the three
interfaces, history with vector versions; error mapping, deadlines, retries and the token; the
SDK importable with grpcio and protobuf only; and a restart that finds everything in place."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import PLATFORM_TOKEN
from service_support import PlatformProcess, free_port, open_store

from steerlab.registry.server import registry_binding
from steerlab.serving import GrpcServer, ServerSettings
from steerlab_api.v1 import jobs_pb2
from steerlab_client import (
    NO_RETRIES,
    ClientError,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    RetryPolicy,
    SteerLab,
    Unauthenticated,
    Unavailable,
)
from steerlab_client.aio import AsyncSteerLab

ROOT = Path(__file__).resolve().parent.parent
DIMENSIONS = {"cost", "ambiance", "age", "time", "culture"}


@pytest.fixture
def steerlab(steerlab_up: Any) -> Any:
    with SteerLab(steerlab_up.address, token=PLATFORM_TOKEN) as client:
        yield client


def test_first_start_registered_the_built_in_dimensions_through_jobs(
    steerlab_up: Any, steerlab: SteerLab
) -> None:
    assert any("extracting cost, ambiance, age, time, culture" in line for line in steerlab_up.startup)
    assert {d.name for d in steerlab.registry.list_dimensions()} >= DIMENSIONS
    aliases = {a.dimension: a.version for a in steerlab.registry.list_aliases() if a.name == "production"}
    assert aliases == dict.fromkeys(DIMENSIONS, 1)
    jobs = list(steerlab.jobs.list())
    assert {j.dimension for j in jobs} == DIMENSIONS
    assert all(j.state == jobs_pb2.JOB_STATE_SUCCEEDED for j in jobs)


def test_select_stream_calibrate_learn_and_history(steerlab: SteerLab) -> None:
    session = steerlab.create_session("ana", strengths={"age": -30})
    assert session.model == steerlab.model

    stream = steerlab.chat(
        "Plan a dinner in Rome.", session=session.id, strengths={"cost": 60}, max_new_tokens=8
    )
    deltas = list(stream)
    assert len(deltas) >= 2 and "".join(deltas) == stream.answer.text
    assert stream.answer.applied == {"age": (1, -30.0), "cost": (1, 60.0)}

    asked: list[tuple[str, float, float]] = []

    def choose(comparison: Any, left: str, right: str) -> str:
        assert left and right
        asked.append((comparison.dimension, comparison.left, comparison.right))
        return "right"  # always the higher strength

    calibrated = steerlab.calibrate(
        session.id, ["ambiance"], "Where to eat?", choose, rounds=3, max_new_tokens=4
    )
    assert [dimension for dimension, _, _ in asked] == ["ambiance"] * 3
    assert all(left < right for _, left, right in asked)
    assert calibrated.strengths["ambiance"] > 50 and calibrated.results[0].dimension == "ambiance"
    assert calibrated.strengths["cost"] == 60  # calibration leaves the other strengths alone

    steerlab.sessions.set_strengths(session.id, {}, mode="learn")
    learned = steerlab.learn(session.id, "That is way too expensive, I am on a tight budget.")
    cost = [c for c in learned.changes if c.dimension == "cost"]
    assert cost and cost[0].after < cost[0].before == 60 and cost[0].reason, learned
    assert learned.strengths["cost"] == cost[0].after and learned.summary

    history = steerlab.sessions.get(session.id, include_turns=True)
    assistant = [t for t in history.turns if t.role == 2]
    assert len(assistant) == 1 and {s.dimension: s.vector_set_version for s in assistant[0].steering} == {
        "age": 1,
        "cost": 1,
    }
    assert history.turns[-1].text.startswith("That is way too expensive")


def test_learn_while_chatting_reports_the_update_of_the_users_turn(steerlab: SteerLab) -> None:
    session = steerlab.create_session("ben", mode="learn", strengths={"cost": 40})
    stream = steerlab.chat("Too pricey! Something cheaper please.", session=session.id, max_new_tokens=4)
    "".join(stream)
    update = steerlab.preference_update(session.id, stream.answer)
    assert update is not None and update.changes[0].dimension == "cost" and update.changes[0].after < 40
    assert stream.answer.applied["cost"][1] == update.changes[0].after  # the answer used the new strength


def test_one_off_generation_without_a_session(steerlab: SteerLab) -> None:
    unsteered = steerlab.inference.generate("Hello there", max_new_tokens=6)
    steered = steerlab.chat("Hello there", strengths={"culture": 100}, max_new_tokens=6).answer
    assert steered.applied == {"culture": (1, 100.0)} and unsteered.applied == {}
    assert steered.text != unsteered.text


def test_the_asyncio_client(steerlab_up: Any) -> None:
    async def scenario() -> tuple[Any, ...]:
        async with AsyncSteerLab(steerlab_up.address, token=PLATFORM_TOKEN) as client:
            session = await client.create_session("cleo", strengths={"time": 50})
            stream = await client.chat("Any plans for tonight?", session=session.id, max_new_tokens=5)
            deltas = [delta async for delta in stream]
            answer = await stream.result()
            both = await asyncio.gather(
                client.generate("Hi", strengths={"age": 100}, max_new_tokens=3),
                client.generate("Hi", strengths={"age": -100}, max_new_tokens=3),
            )
            learning = await client.create_session("cleo", mode="learn", strengths={"cost": 40})
            learned = await client.learn(learning.id, "That is too expensive for me.")
            calibrated = await client.calibrate(
                session.id, ["age"], "Gift ideas?", _async_left, rounds=2, max_new_tokens=3
            )
            with pytest.raises(NotFound):
                await client.get_session("no-such-session")
            return deltas, answer, both, learned, calibrated

    deltas, answer, both, learned, calibrated = asyncio.run(scenario())
    assert "".join(deltas) == answer.text and answer.applied == {"time": (1, 50.0)}
    assert [a.applied["age"][1] for a in both] == [100.0, -100.0]
    assert any(c.dimension == "cost" for c in learned.changes)
    assert calibrated.strengths["age"] < 0  # always the lower strength


async def _async_left(comparison: Any, left: str, right: str) -> str:
    await asyncio.sleep(0)
    return "left"


def test_errors_arrive_as_typed_exceptions_with_the_servers_message(
    steerlab_up: Any, steerlab: SteerLab
) -> None:
    with pytest.raises(NotFound) as missing:
        steerlab.sessions.get("no-such-session")
    assert missing.value.code == grpc.StatusCode.NOT_FOUND and "no-such-session" in missing.value.message
    with pytest.raises(InvalidArgument, match="150"):
        steerlab.inference.generate("Hi", strengths={"cost": 150})
    with pytest.raises(NotFound, match="nonsense"):
        steerlab.inference.generate("Hi", strengths={"nonsense": 10})
    with pytest.raises(ValueError, match="mode must be one of"):
        steerlab.create_session("dora", mode="telepathy")
    with SteerLab(steerlab_up.address, token="") as anonymous, pytest.raises(Unauthenticated):
        anonymous.sessions.get("anything")
    with SteerLab(steerlab_up.address, token="wrong") as wrong, pytest.raises(Unauthenticated):
        wrong.inference.generate("Hi")
    assert isinstance(missing.value, ClientError)


def test_a_deadline_ends_a_long_generation(steerlab_up: Any) -> None:
    with SteerLab(steerlab_up.address, token=PLATFORM_TOKEN, generation_timeout_s=0.3) as hasty:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            hasty.inference.generate("Tell me a long story.", max_new_tokens=400)
        assert time.monotonic() - started < 5


def test_unavailable_is_retried_with_backoff_until_the_server_comes_up(tmp_path: Path) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    with SteerLab(address, retry=NO_RETRIES, timeout_s=2) as impatient, pytest.raises(Unavailable):
        impatient.registry.list_dimensions()

    store = open_store(f"sqlite:///{tmp_path / 'registry.db'}")
    server = GrpcServer([registry_binding(store)], ServerSettings(port=port, metrics_port=None))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    threading.Timer(1.0, lambda: asyncio.run_coroutine_threadsafe(server.start(), loop)).start()
    try:
        patient = RetryPolicy(attempts=8, initial_backoff_s=0.2, max_backoff_s=1.0)
        with SteerLab(address, retry=patient, timeout_s=20) as client:
            started = time.monotonic()
            assert {d.name for d in client.registry.list_dimensions()} == DIMENSIONS
            assert time.monotonic() - started >= 0.9  # it waited for the server, not failed fast
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        store.close()


ONLY_GRPC = """
import importlib.abc, re, sys
from importlib.metadata import requires
# The SDK's packages, grpcio and protobuf, and what those two themselves require.
ALLOWED = {"grpc", "google", "steerlab_client", "steerlab_api"} | {
    re.split(r"[ ;<>=~!\\[]", requirement)[0].replace("-", "_").lower()
    for distribution in ("grpcio", "protobuf")
    for requirement in requires(distribution) or []
    if "extra ==" not in requirement
}

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top in ALLOWED or top.startswith("_"):
            return None
        raise ImportError(f"the SDK must not need {name}")

sys.meta_path.insert(0, Refuse())
from steerlab_client import SteerLab
with SteerLab(sys.argv[1], token=sys.argv[2]) as client:
    session = client.create_session("eve", strengths={"cost": -50})
    answer = client.chat("Hi", session=session.id, max_new_tokens=3).answer
assert answer.applied == {"cost": (1, -50.0)}, answer.applied
assert not {"torch", "numpy", "transformers", "steerlab"} & set(sys.modules)
print("ok", answer.text[:10])
"""


def test_the_sdk_needs_only_grpcio_and_protobuf(steerlab_up: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-c", ONLY_GRPC, steerlab_up.address, PLATFORM_TOKEN],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout.startswith("ok"), result.stderr[-3000:]
    pyproject = (ROOT / "clients" / "python" / "pyproject.toml").read_text()
    assert 'dependencies = ["grpcio>=1.85.1", "protobuf>=7.36.2"]' in pyproject


def test_a_restart_finds_the_dimensions_and_sessions_in_place(tmp_path: Path, tiny_model_dir: Path) -> None:
    first = PlatformProcess(str(tiny_model_dir), tmp_path / "data", tmp_path / "home")
    try:
        with SteerLab(first.address) as client:
            session = client.create_session("fay", strengths={"cost": 20})
    finally:
        assert first.stop() == 0
    second = PlatformProcess(str(tiny_model_dir), tmp_path / "data", tmp_path / "home")
    try:
        assert any("all 5 registered for this model" in line for line in second.startup), second.startup
        assert not any("extracting" in line for line in second.startup)
        with SteerLab(second.address) as client:
            assert dict(client.sessions.get(session.id).strengths) == {"cost": 20.0}
            assert len(list(client.jobs.list())) == 5
    finally:
        assert second.stop() == 0


def test_bad_flags_fail_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "steerlab.cli", "up", "--model", str(tmp_path / "missing"), "--port", "0",
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1 and "steerlab: error:" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_client_errors_are_catchable_as_one_base_class() -> None:
    assert issubclass(Unavailable, ClientError) and issubclass(DeadlineExceeded, ClientError)
    error = ClientError.from_rpc_error(_FakeCall(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full"))
    assert type(error).__name__ == "ResourceExhausted" and error.message == "queue full"


class _FakeCall(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """Only for the mapping test above: the code and details a failed call carries."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> Any: ...
    def trailing_metadata(self) -> Any: ...
    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> Any: ...
    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


def test_steerlab_commands_send_the_token_from_the_environment(steerlab_up: Any) -> None:
    def vectors_list(token: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "steerlab.cli", "vectors", "list", "--registry", steerlab_up.address]
        env = {**os.environ, "STEERLAB_TOKEN": token}
        return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)

    allowed = vectors_list(PLATFORM_TOKEN)
    assert allowed.returncode == 0 and "culture" in allowed.stdout, allowed.stderr
    refused = vectors_list("")
    assert refused.returncode == 1 and refused.stderr.startswith("steerlab: error: UNAUTHENTICATED")
