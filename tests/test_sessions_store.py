"""Sessions behave the same on PostgreSQL and SQLite: SELECT, the turn log, concurrency."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from service_support import fresh_postgres_database

from steerlab.sessions.catalog import StaticCatalog
from steerlab.sessions.manager import SessionManager
from steerlab.sessions.state import PreferenceUpdate, SteeringUsed, StrengthChange
from steerlab.sessions.store import SessionStore
from steerlab.steering import SteeringError
from steerlab.steering.errors import (
    AbortedError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from steerlab.storage import open_database


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sessions.db'}"
    else:
        with fresh_postgres_database() as url:
            yield url


def open_manager(url: str) -> SessionManager:
    return SessionManager(SessionStore(open_database(url)), StaticCatalog())


@pytest.fixture
def manager(database_url: str) -> Iterator[SessionManager]:
    opened = open_manager(database_url)
    yield opened
    opened.store.close()


def test_create_get_list_delete(manager: SessionManager) -> None:
    first = manager.create("acme", "ana", "smollm2-135m", strengths={"cost": 40})
    second = manager.create("acme", "ana", "smollm2-135m", mode="learn")
    manager.create("acme", "bob", "smollm2-135m")
    manager.create("other", "ana", "smollm2-135m")
    fetched = manager.store.get(first.id)
    assert (fetched.tenant, fetched.user_id, fetched.mode, fetched.strengths) == (
        "acme",
        "ana",
        "select",
        {"cost": 40.0},
    )
    assert fetched.learning_rate == 50.0 and fetched.revision == 1
    page, token = manager.store.list("acme", "ana", page_size=1)
    assert [s.id for s in page] == [second.id] and token  # newest first
    rest, last = manager.store.list("acme", "ana", page_size=1, page_token=token)
    assert [s.id for s in rest] == [first.id] and last == ""
    manager.store.delete(first.id)
    with pytest.raises(NotFoundError, match="no session"):
        manager.store.get(first.id)


def test_select_changes_only_the_given_strengths_and_refuses_bad_values(manager: SessionManager) -> None:
    session = manager.create("t", "ana", "m", strengths={"cost": 40, "age": -20})
    updated = manager.select(session.id, {"age": 60, "time": -100})
    assert updated.strengths == {"cost": 40.0, "age": 60.0, "time": -100.0}
    assert updated.revision == 2
    with pytest.raises(SteeringError, match=r"outside -100\.\.100"):
        manager.select(session.id, {"cost": 120})
    with pytest.raises(SteeringError, match="finite"):
        manager.select(session.id, {"cost": float("nan")})
    with pytest.raises(
        InvalidArgumentError, match=r"unknown dimension 'spice'; known dimensions: age, ambiance"
    ):
        manager.select(session.id, {"spice": 10})
    with pytest.raises(InvalidArgumentError, match="unknown mode"):
        manager.select(session.id, {}, mode="vibes")
    assert manager.store.get(session.id).strengths == updated.strengths  # nothing half-applied


def test_bad_sessions_are_refused(manager: SessionManager) -> None:
    with pytest.raises(InvalidArgumentError, match="user_id must be"):
        manager.create("t", "", "m")
    with pytest.raises(InvalidArgumentError, match="learning_rate must be within"):
        manager.create("t", "ana", "m", learning_rate=-5)
    with pytest.raises(SteeringError, match="outside"):
        manager.create("t", "ana", "m", strengths={"cost": -101})


def test_turns_record_the_steering_and_updates_that_produced_them(manager: SessionManager) -> None:
    session = manager.create("t", "ana", "m")
    manager.append_turn(session.id, "user", "Plan a dinner.")
    used = [SteeringUsed("cost", 3, "a1" * 32, 40.0), SteeringUsed("age", 1, "a1" * 32, -20.0)]
    turn, after = manager.append_turn(session.id, "assistant", "Try the bistro.", used)
    assert (turn.index, after.turn_count) == (2, 2)
    update = PreferenceUpdate((StrengthChange("cost", 40, 20, "cost -20%: 'too pricey'"),), "cost -20%")

    def rated(s, _turn):  # type: ignore[no-untyped-def]
        return s, update

    manager.store.rate_turn(session.id, 2, "down", rated)
    turns = manager.store.turns(session.id)
    assert [(t.index, t.role, t.text) for t in turns] == [
        (1, "user", "Plan a dinner."),
        (2, "assistant", "Try the bistro."),
    ]
    assert turns[1].steering == tuple(used) and turns[1].rating == "down" and turns[1].update == update
    with pytest.raises(FailedPreconditionError, match="rate an assistant turn"):
        manager.store.rate_turn(session.id, 1, "up", rated)
    with pytest.raises(NotFoundError, match="has no turn 9"):
        manager.store.rate_turn(session.id, 9, "up", rated)
    with pytest.raises(InvalidArgumentError, match="needs text"):
        manager.append_turn(session.id, "user", "   ")
    with pytest.raises(SteeringError, match="outside"):
        manager.append_turn(session.id, "assistant", "x", [SteeringUsed("cost", 1, "d", 300.0)])


def test_concurrent_updates_are_all_applied(database_url: str) -> None:
    """Writers on separate stores (as separate replicas) change different dimensions at once."""
    managers = [open_manager(database_url) for _ in range(3)]
    session = managers[0].create("t", "ana", "m")
    names = ["cost", "ambiance", "age", "time", "culture"]
    barrier = threading.Barrier(10)

    def write(i: int) -> None:
        barrier.wait()
        if i < 5:
            managers[i % 3].select(session.id, {names[i]: float(10 * (i + 1))})
        else:
            managers[i % 3].append_turn(session.id, "user", f"message {i}")

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(write, range(10)))
    final = managers[0].store.get(session.id)
    assert final.strengths == {name: float(10 * (i + 1)) for i, name in enumerate(names)}
    assert final.revision == 11  # one creation, ten changes: none lost
    turns = managers[0].store.turns(session.id)
    assert [t.index for t in turns] == [1, 2, 3, 4, 5]
    assert sorted(t.text for t in turns) == [f"message {i}" for i in range(5, 10)]
    for opened in managers:
        opened.store.close()


def test_a_stale_revision_is_refused_not_overwritten(manager: SessionManager) -> None:
    session = manager.create("t", "ana", "m")
    manager.select(session.id, {"cost": 50}, expected_revision=session.revision)
    with pytest.raises(AbortedError, match="changed since revision 1 \\(now 2\\)"):
        manager.select(session.id, {"cost": -50}, expected_revision=session.revision)
    assert manager.store.get(session.id).strengths == {"cost": 50.0}


def test_calibration_state_is_stored_and_resumes(database_url: str) -> None:
    first = open_manager(database_url)
    session = first.create("t", "ana", "m", mode="calibrate")
    first.start_calibration(session.id, ["cost", "age"], rounds=2)
    first.choose(session.id, "cost", 1, "right")
    first.store.close()

    resumed = open_manager(database_url)  # a new process, as after a restart
    calibration = resumed.calibration(session.id)
    assert calibration is not None and (calibration.remaining[0], calibration.round) == ("cost", 2)
    with pytest.raises(FailedPreconditionError, match="calibration is in progress \\(cost round 2 of 2\\)"):
        resumed.start_calibration(session.id, ["cost"])
    after = resumed.choose(session.id, "cost", 2, "left")
    assert after.strengths == {"cost": 25.0}
    restarted = resumed.start_calibration(session.id, ["time"], restart=True)
    assert restarted.calibration is not None and restarted.calibration.remaining == ("time",)
    resumed.store.close()
