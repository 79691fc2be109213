"""The session service over a real socket, backed by a real PostgreSQL."""

from __future__ import annotations

import contextlib
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from service_support import ServerThread, fresh_postgres_database

from steerlab.serving import ServerSettings
from steerlab.sessions.learn import FeedbackInterpreter, make_interpreter
from steerlab.sessions.server import SessionSettings, build_session_server
from steerlab_api.v1 import sessions_pb2 as pb
from steerlab_client import ClientError, RegistryClient, SessionClient


@pytest.fixture(scope="module")
def interpreter() -> FeedbackInterpreter:
    return make_interpreter()


@pytest.fixture
def database_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


def start_sessions(database_url: str, interpreter: FeedbackInterpreter, registry: str = "") -> ServerThread:
    settings = SessionSettings(
        database_url=database_url, registry=registry, server=ServerSettings(port=0, metrics_port=0)
    )
    server, manager = build_session_server(settings, interpreter)
    return ServerThread(server=server, closing=manager.store.close)


@pytest.fixture
def sessions(database_url: str, interpreter: FeedbackInterpreter) -> Iterator[ServerThread]:
    running = start_sessions(database_url, interpreter)
    yield running
    running.stop()


@pytest.fixture
def client(sessions: ServerThread) -> Iterator[SessionClient]:
    with SessionClient(sessions.target) as opened:
        yield opened


def _raises(code: grpc.StatusCode, match: str) -> pytest.RaisesExc[ClientError]:
    return pytest.raises(ClientError, match=f"{code.name}: .*{match}")


def test_select_and_bad_input(client: SessionClient) -> None:
    session = client.create("ana", "smollm2-135m", strengths={"cost": 40})
    assert dict(session.strengths) == {"cost": 40.0} and session.mode == pb.INTERFACE_MODE_SELECT
    updated = client.set_strengths(session.id, {"age": -60})
    assert dict(updated.strengths) == {"cost": 40.0, "age": -60.0}
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "outside -100..100"):
        client.set_strengths(session.id, {"cost": 100.5})
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "must be a finite number"):
        client.set_strengths(session.id, {"cost": float("inf")})
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "unknown dimension 'spice'"):
        client.set_strengths(session.id, {"spice": 10})
    with _raises(grpc.StatusCode.ABORTED, "changed since revision 1"):
        client.set_strengths(session.id, {"cost": 0}, expected_revision=session.revision)
    with _raises(grpc.StatusCode.NOT_FOUND, "no session 'nope'"):
        client.get("nope")
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "user_id must be"):
        client.create("", "smollm2-135m")
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "role must be one of"):
        client._call(client._stub.AppendTurn, pb.AppendTurnRequest(session_id=session.id, text="hi"))
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "limited to 32000 characters"):
        client.add_user_turn(session.id, "x" * 40_000)
    assert dict(client.get(session.id).strengths) == {"cost": 40.0, "age": -60.0}


def test_conversation_log_records_vector_versions(client: SessionClient) -> None:
    session = client.create("ana", "smollm2-135m")
    client.add_user_turn(session.id, "Plan a dinner in Rome.")
    used = [pb.SteeringUsed(dimension="cost", vector_set_version=3, model_digest="ab" * 32, strength=40)]
    client.add_assistant_turn(session.id, "Try the trattoria.", used)
    read = client.get(session.id, include_turns=True)
    assert [(t.index, t.role, t.text) for t in read.turns] == [
        (1, pb.ROLE_USER, "Plan a dinner in Rome."),
        (2, pb.ROLE_ASSISTANT, "Try the trattoria."),
    ]
    assert read.turns[1].steering[0].vector_set_version == 3 and read.turns[1].steering[0].strength == 40
    assert [s.id for s in client.list_sessions("ana")] == [session.id]
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "user_id must be"):
        list(client.list_sessions(""))
    client.delete(session.id)
    with _raises(grpc.StatusCode.NOT_FOUND, "no session"):
        client.delete(session.id)


def test_learn_moves_strengths_with_reasons_and_feedback_counts(client: SessionClient) -> None:
    session = client.create("ana", "smollm2-135m", mode="learn", strengths={"cost": 60})
    praised = client.add_user_turn(session.id, "Perfect, that's exactly what I wanted, thank you!")
    assert praised.turn.update.changes == [] and dict(praised.session.strengths) == {"cost": 60.0}
    complaint = client.add_user_turn(session.id, "Ugh, that is way too expensive for us. Something cheaper?")
    (change,) = complaint.turn.update.changes
    assert change.dimension == "cost" and change.after < 60.0
    assert change.reason.startswith(f"cost {change.after - 60:+.0f}%: '")
    assert complaint.session.strengths["cost"] == change.after

    answer = client.add_assistant_turn(session.id, "How about a food truck?").turn
    down = client.feedback(session.id, answer.index, "down", "still too pricey")
    assert down.update.changes[0].dimension == "cost" and down.session.strengths["cost"] < change.after
    up = client.feedback(session.id, answer.index, "up")
    assert up.update.changes == [] and up.session.learning_rate == 25.0
    with _raises(grpc.StatusCode.FAILED_PRECONDITION, "rate an assistant turn"):
        client.feedback(session.id, 1, "up")
    history = client.get(session.id, include_turns=True).turns
    assert history[1].update.changes[0].reason == change.reason  # the log keeps why
    assert history[2].rating == pb.RATING_THUMBS_UP


def test_a_reply_that_moved_nothing_says_why_in_the_history(client: SessionClient) -> None:
    session = client.create("ana", "smollm2-135m", mode="learn", strengths={"cost": 20})
    client.add_assistant_turn(session.id, "1. A hostel by the station.\n2. A five-star hotel on the beach.")
    asked = client.add_user_turn(session.id, "How far is the first one from the old town?")
    assert asked.turn.update.changes == [] and dict(asked.session.strengths) == {"cost": 20.0}
    picked = client.add_user_turn(session.id, "The beach hotel sounds perfect!")
    assert [c.dimension for c in picked.turn.update.changes] == ["cost"]
    assert picked.session.strengths["cost"] > 20.0
    history = client.get(session.id, include_turns=True).turns
    why = history[1].update.summary  # asked later, from the stored log
    assert why.startswith("no change: nothing said asks for more or less of any dimension"), why
    assert "nearest:" in why and "sure; LEARN moves at" in why
    assert history[2].update.changes[0].reason.endswith("[A five-star hotel on the beach.]'")


def test_calibration_resumes_after_reconnect(sessions: ServerThread) -> None:
    target = 60.0
    with SessionClient(sessions.target) as first:
        session = first.create("ana", "smollm2-135m", mode="calibrate")
        calibration = first.start_calibration(session.id, ["cost"])
        comparison = calibration.pending
        side = "left" if abs(comparison.left - target) <= abs(comparison.right - target) else "right"
        first.choose(session.id, comparison, side)
    with SessionClient(sessions.target) as second:  # a new connection picks up where it was
        calibration = second.calibration(session.id)
        assert calibration.pending.round == 2 and not calibration.done
        with _raises(grpc.StatusCode.FAILED_PRECONDITION, "pending comparison is cost round 2"):
            second.choose(session.id, comparison, "left")  # the round-1 answer, sent again
        while not calibration.done:
            comparison = calibration.pending
            side = "left" if abs(comparison.left - target) <= abs(comparison.right - target) else "right"
            calibration = second.choose(session.id, comparison, side).calibration
        final = second.get(session.id)
    assert abs(final.strengths["cost"] - target) <= 25
    assert calibration.results[0].dimension == "cost"


def test_a_retried_request_is_applied_once(client: SessionClient) -> None:
    """A client that retries after a lost reply resends the same request id; the server answers
    with what the first call did instead of doing it again."""
    created = client.create("ana", "smollm2-135m", mode="learn", strengths={"cost": 60}, request_id="c-1")
    again = client.create("ana", "smollm2-135m", mode="learn", strengths={"cost": 60}, request_id="c-1")
    assert again.id == created.id
    other_user = client.create("ben", "smollm2-135m", request_id="c-1")  # keys are per user
    assert other_user.id != created.id

    complaint = "Ugh, that is way too expensive for us. Something cheaper?"
    first = client.add_user_turn(created.id, complaint, request_id="t-1")
    retried = client.add_user_turn(created.id, complaint, request_id="t-1")
    assert first.turn.index == retried.turn.index == 1
    assert retried.session.strengths["cost"] == first.session.strengths["cost"] < 60.0  # LEARN stepped once
    answer = client.add_assistant_turn(created.id, "A food truck.", request_id="a-1")
    repeated = client.add_assistant_turn(created.id, "A food truck.", request_id="a-1")
    assert repeated.turn.index == answer.turn.index
    assert [t.text for t in client.get(created.id, include_turns=True).turns] == [complaint, "A food truck."]

    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "request_id must be at most 128"):
        client.add_user_turn(created.id, "cheaper", request_id="r" * 129)
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "request_id must be at most 128"):
        client.create("ana", "smollm2-135m", request_id="bad\x00id")
    assert client.get(created.id).turn_count == 2


def test_a_retried_calibration_answer_is_not_refused(client: SessionClient) -> None:
    session = client.create("ana", "smollm2-135m", mode="calibrate")
    comparison = client.start_calibration(session.id, ["cost"]).pending
    first = client.choose(session.id, comparison, "left", request_id="pick-1")
    retried = client.choose(session.id, comparison, "left", request_id="pick-1")  # the reply was lost
    assert retried.calibration.pending.round == first.calibration.pending.round == 2
    assert retried.session.revision == first.session.revision
    with _raises(grpc.StatusCode.FAILED_PRECONDITION, "pending comparison is cost round 2"):
        client.choose(session.id, comparison, "left", request_id="pick-2")  # a new answer to round 1


def test_concurrent_updates_over_the_wire_lose_nothing(sessions: ServerThread, client: SessionClient) -> None:
    session = client.create("ana", "smollm2-135m")
    names = ["cost", "ambiance", "age", "time", "culture"]
    barrier = threading.Barrier(len(names))

    def update(i: int) -> None:
        with SessionClient(sessions.target) as own:
            barrier.wait()
            own.set_strengths(session.id, {names[i]: float(i * 10 - 20)})

    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(update, range(len(names))))
    final = client.get(session.id)
    assert dict(final.strengths) == {name: float(i * 10 - 20) for i, name in enumerate(names)}
    assert final.revision == 1 + len(names)


def test_dimensions_come_from_the_registry(database_url: str, interpreter: FeedbackInterpreter) -> None:
    registry = ServerThread(database_url)
    sessions = start_sessions(database_url, interpreter, registry=registry.target)
    try:
        with RegistryClient(registry.target) as registry_client:
            registry_client.create_dimension("spice", "mild", "hot", "How spicy the food is.")
        with SessionClient(sessions.target) as client:
            session = client.create("ana", "smollm2-135m", strengths={"spice": 70})
            assert dict(session.strengths) == {"spice": 70.0}
            metrics = urllib.request.urlopen(sessions.metrics_url, timeout=5).read().decode()
            assert 'steerlab_session_requests_total{code="OK",method="CreateSession"} 1.0' in metrics
    finally:
        sessions.stop()
        registry.stop()


@pytest.fixture(params=["postgresql", "sqlite"])
def both_backends(
    request: pytest.FixtureRequest, tmp_path: Path, interpreter: FeedbackInterpreter
) -> Iterator[SessionClient]:
    """A session service on each backend, holding at most 6 turns and 2,000 characters."""
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            url = stack.enter_context(fresh_postgres_database())
        else:
            url = f"sqlite:///{tmp_path / 'sessions.db'}"
        settings = SessionSettings(
            database_url=url,
            session_max_turns=6,
            session_max_history_characters=2_000,
            server=ServerSettings(port=0, metrics_port=0),
        )
        server, manager = build_session_server(settings, interpreter)
        running = ServerThread(server=server, closing=manager.store.close)
        stack.callback(running.stop)
        yield stack.enter_context(SessionClient(running.target))


def test_an_exchange_is_recorded_whole_or_not_at_all(both_backends: SessionClient) -> None:
    """Issue 20: a message is recorded only with its answer; a preview writes nothing; of two
    answers generated from one history (two replicas), the second is refused, not interleaved."""
    client = both_backends
    session = client.create("ana", "smollm2-135m", mode="learn", strengths={"cost": 60})
    complaint = "Ugh, that is way too expensive for us. Something cheaper?"
    preview = client.preview_exchange(session.id, [complaint])
    assert preview.session.strengths["cost"] < 60.0 and preview.update.changes  # what LEARN would do
    assert client.get(session.id).turn_count == 0 and client.get(session.id).strengths["cost"] == 60.0

    other = client.preview_exchange(session.id, ["Where should we stay?"])  # a second replica
    used = [pb.SteeringUsed(dimension="cost", vector_set_version=1, model_digest="ab" * 32, strength=40)]
    first = client.record_exchange(
        session.id, [complaint], "A food truck.", used, preview.session.turn_count, request_id="g-1"
    )
    assert [(t.index, t.role) for t in first.turns] == [(1, pb.ROLE_USER), (2, pb.ROLE_ASSISTANT)]
    assert first.session.strengths["cost"] == preview.session.strengths["cost"]
    with _raises(grpc.StatusCode.ABORTED, "has 2 turns, not the 0"):
        client.record_exchange(
            session.id, ["Where should we stay?"], "A hostel.", [], other.session.turn_count
        )
    retried = client.record_exchange(session.id, [complaint], "A food truck.", used, 0, request_id="g-1")
    assert [t.index for t in retried.turns] == [1, 2]
    turns = client.get(session.id, include_turns=True).turns
    assert [t.text for t in turns] == [complaint, "A food truck."]
    assert turns[0].update.changes and turns[1].steering[0].strength == 40

    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "needs the user's message"):
        client.record_exchange(session.id, [], "An answer to nothing.", [], 2)
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "a turn needs text"):
        client.record_exchange(session.id, ["Hello?"], "   ", [], 2)
    assert client.get(session.id).turn_count == 2


def test_a_session_cannot_be_bricked(both_backends: SessionClient) -> None:
    """Issue 20: 100,000 steering entries, or more turns or text than a session may hold, are
    refused with a status that names the limit, and the session stays readable."""
    client = both_backends
    session = client.create("ana", "smollm2-135m")
    flood = [pb.SteeringUsed(dimension="cost", vector_set_version=1, strength=10)] * 100_000
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "repeats one"):
        client.add_assistant_turn(session.id, "An answer.", flood)
    with _raises(grpc.StatusCode.FAILED_PRECONDITION, "2000 .*STEERLAB_SESSION_MAX_HISTORY_CHARACTERS"):
        client.record_exchange(session.id, ["x" * 1_500], "y" * 1_000, [], 0)
    for number in range(3):
        client.record_exchange(session.id, [f"Question {number}?"], f"Answer {number}.", [], number * 2)
    with _raises(grpc.StatusCode.FAILED_PRECONDITION, "most a session may hold is 6 .*start a new session"):
        client.add_user_turn(session.id, "One more?")
    read = client.get(session.id, include_turns=True)
    assert read.turn_count == 6 and [t.index for t in read.turns] == [1, 2, 3, 4, 5, 6]
