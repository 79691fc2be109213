"""LEARN reads people: measured on the held-out test set (``data/learn/test.json``), written by
another author in another voice and never fitted or tuned on.

Every threshold below was set from the development set (``data/learn/dev.json``) before the test
set was first read, with a margin for a new voice; the development figure is stated beside each.
Where the product's goal (issue 17) is stricter, the goal is stated too: 80% read right is not
met (see docs/method-notes.md, LEARN).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from steerlab.sessions.catalog import StaticCatalog
from steerlab.sessions.learn import (
    MAX_READ_CHARACTERS,
    IntentReader,
    Reading,
    Signal,
    apply_signals,
    split_clauses,
)
from steerlab.sessions.learn.banks import neutral_replies, pole_requests
from steerlab.sessions.learn.evaluate import evaluate, load_set
from steerlab.sessions.learn.text import options, pointed_option
from steerlab.sessions.manager import SessionManager
from steerlab.sessions.state import DEFAULT_LEARNING_RATE as LEARNING_RATE
from steerlab.sessions.store import SessionStore
from steerlab.steering.datasets import Dimension, builtin_dimensions
from steerlab.storage import open_database

DIMENSIONS = builtin_dimensions()


@pytest.fixture(scope="module")
def reader() -> IntentReader:
    return IntentReader()


@pytest.fixture(scope="module")
def figures(reader: IntentReader) -> dict[str, Any]:
    return evaluate(reader, "test")


def test_single_replies_are_read_right(figures: dict[str, Any]) -> None:
    replies = figures["builtin"]["replies"]
    assert replies["total"] >= 200
    misread = figures["builtin"]["misread"]
    assert replies["right"] >= 0.60, misread  # development set: 0.696 (goal: 0.80, not met)
    assert replies["wrong_direction"] <= 0.08, misread  # development set: 0.050 (goal: 0.05)
    assert replies["other_dimension"] <= 0.06, misread  # development set: 0.029 (goal: 0.05)


def test_replies_that_ask_for_nothing_move_nothing(figures: dict[str, Any]) -> None:
    neutral = figures["builtin"]["neutral"]
    assert neutral["total"] >= 60
    # development set: 0.029 (goal: 0.05)
    assert neutral["moved_share"] <= 0.06, figures["builtin"]["neutral_moved"]


def test_oracle_users_reach_their_hidden_target(figures: dict[str, Any]) -> None:
    users = figures["builtin"]["oracle_users"]
    assert users["total"] == 50
    assert users["converged"] >= 0.85, users["users"]  # development set: 1.00 (goal: 0.85)
    assert users["wrong_side"] == 0, users["users"]  # development set: 0 (goal: 0)


def test_a_custom_dimension_in_the_catalog_keeps_content_replies_still(figures: dict[str, Any]) -> None:
    # noise (quiet <-> lively) has no bank: it is read from its pole names only (see
    # test_a_custom_dimension_is_read_from_its_pole_names); implicit wishes for it are not
    # understood (development set: 2 of 24 read right). What must hold: adding it moves no
    # content reply.
    noise = figures["noise"]
    assert noise["replies"]["total"] >= 20
    assert noise["neutral"]["moved_share"] <= 0.06, noise["neutral_moved"]  # development set: 0.029


def test_a_custom_dimension_is_read_from_its_pole_names(reader: IntentReader) -> None:
    noise = Dimension("noise", "quiet", "lively", "How loud and busy a place is.")
    dimensions = [*DIMENSIONS, noise]
    assert reader.interpret("Somewhere quiet, please.", dimensions).moved().get("noise") == -1
    assert (
        reader.interpret("hmm, that all sounds too quiet for a birthday", dimensions).moved().get("noise")
        == 1
    )
    assert reader.interpret("nothing too lively tonight", dimensions).moved().get("noise") == -1
    assert reader.interpret("Somewhere quiet, please.", DIMENSIONS).moved() == {}


def test_reading_a_reply_takes_well_under_100_ms(figures: dict[str, Any]) -> None:
    # Not a timing goal (those live in benchmarks): a guard against a reader 10x too slow.
    assert figures["latency_ms"]["p50"] < 100


def test_a_reply_is_read_against_the_answer_it_replies_to(reader: IntentReader) -> None:
    answer = (
        "Here are three ideas:\n1. The rooftop wine bar with a tasting flight.\n"
        "2. The city zoo, with a petting farm and a playground.\n3. The harbour walk."
    )
    assert [o[:12] for o in options(answer)] == ["The rooftop ", "The city zoo", "The harbour "]
    choices = options(answer)
    picks = [
        "the second one is more like it",
        "option 3 pls",
        "the last one",
        "zoo it is!",
        "is the zoo open late?",
    ]
    assert [pointed_option(reply, choices) for reply in picks] == [1, 2, 2, 1, None]
    reading = reader.interpret("the second one is more like it", DIMENSIONS, answer)
    assert reading.moved() == {"age": -1}
    assert reader.interpret("the second one is more like it", DIMENSIONS).moved() == {}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("🙂🙂👍", "has none"),
        ("¿A qué hora abre el mercado?", "nothing said asks"),
        ("Wie weit ist es zum Bahnhof?", "nothing said asks"),
        ("Thanks, how many people does the place seat?", "nothing said asks"),
    ],
)
def test_what_moves_nothing_says_why(reader: IntentReader, text: str, why: str) -> None:
    reading = reader.interpret(text, DIMENSIONS)
    assert reading.moved() == {}
    _, update = apply_signals({"cost": 20.0}, reading, LEARNING_RATE)
    assert update.changes == () and update.summary.startswith("no change") and why in update.summary


def test_a_long_reply_is_read_up_to_the_cap_and_says_so(reader: IntentReader) -> None:
    text = "Way too expensive for us, something cheaper please. " + "blah " * 4000
    reading = reader.interpret(text, DIMENSIONS)
    assert reading.moved() == {"cost": -1}
    _, update = apply_signals({}, reading, LEARNING_RATE)
    assert f"first {MAX_READ_CHARACTERS:,} characters" in update.summary


def test_bad_replies_in_a_session_get_a_clear_status_and_move_nothing(
    reader: IntentReader, tmp_path: Path
) -> None:
    from steerlab.steering.errors import InvalidArgumentError

    manager = SessionManager(
        SessionStore(open_database(f"sqlite:///{tmp_path / 's.db'}")), StaticCatalog(), reader
    )
    session = manager.create("t", "ana", "m", mode="learn", strengths={"cost": 30})
    for bad in ["", "   ", "x" * 64 * 1024]:
        with pytest.raises(InvalidArgumentError):
            manager.append_turn(session.id, "user", bad)
    for harmless in ["😀😀😀", "Merci beaucoup, c'est parfait !", "Thanks! " + "so " * 3000]:
        turn, after = manager.append_turn(session.id, "user", harmless)
        assert after.strengths == {"cost": 30.0} and turn.update is not None
        assert turn.update.summary.startswith("no change"), turn.update.summary
    manager.append_turn(
        session.id, "assistant", "1. A hostel dorm.\n2. A five-star suite with a butler.\n3. A B&B."
    )
    turn, after = manager.append_turn(session.id, "user", "ooh option 2 please")
    assert after.strengths["cost"] > 30.0, turn.update
    manager.store.close()


def test_each_clause_can_move_its_own_dimension(reader: IntentReader) -> None:
    text = "Way too pricey, and our kids are with us."
    assert reader.interpret(text, DIMENSIONS).moved() == {"cost": -1, "age": -1}


@pytest.mark.xfail(strict=True, reason="known gap: the bank's many complaints that name the other pole")
def test_a_plain_request_naming_its_pole_is_read_that_way(reader: IntentReader) -> None:
    # "Could we go in the morning instead?" is read as a wish for the evening: the training bank
    # holds many replies that name a pole to reject it ("why is everything a breakfast place?").
    assert reader.interpret("Could we go in the morning instead?", DIMENSIONS).moved() == {"time": 1}


def test_thumbs_down_counts_as_full_dissatisfaction(reader: IntentReader) -> None:
    text = "Could we find something a bit cheaper?"
    mild = {s.dimension: s for s in reader.interpret(text, DIMENSIONS).signals}["cost"]
    down = {s.dimension: s for s in reader.interpret(text, DIMENSIONS, dissatisfaction=1.0).signals}["cost"]
    assert mild.direction == down.direction == -1
    assert down.dissatisfaction == 1.0 > mild.dissatisfaction


def test_steps_are_clipped_to_the_range_and_unchanged_dimensions_are_left_out() -> None:
    signals = (
        Signal("cost", 1, 1.0, "fancier!"),
        Signal("age", 0, 0.0, ""),
        Signal("time", -1, 0.5, "later"),
    )
    strengths, update = apply_signals({"cost": 90.0, "time": -100.0}, Reading(signals), LEARNING_RATE)
    assert strengths == {"cost": 100.0, "time": -100.0}
    assert [c.dimension for c in update.changes] == ["cost"]
    assert update.changes[0].reason == "cost +10%: 'fancier!'"
    _, at_the_end = apply_signals({"time": -100.0}, Reading((signals[2],)), LEARNING_RATE)
    assert at_the_end.changes == () and "already at the end" in at_the_end.summary


def test_custom_dimensions_get_requests_built_from_their_poles() -> None:
    spice = Dimension("spice", "mild", "hot", "How spicy the food is.")
    requests = pole_requests(spice)
    assert set(requests) == {"mild", "hot"}
    assert any("too hot" in r for r in requests["mild"]) and any("more hot" in r for r in requests["hot"])


def test_messages_are_split_into_clauses() -> None:
    assert split_clauses("Too pricey. Something cheaper?\nThanks!") == [
        "Too pricey.",
        "Something cheaper?",
        "Thanks!",
    ]
    assert split_clauses("Cheap and cheerful, but we want brunch") == ["Cheap and cheerful", "we want brunch"]
    assert split_clauses("ugh... too fancy - we're students") == ["ugh", "too fancy", "we're students"]


def test_the_evaluation_sets_are_apart_from_the_bank() -> None:
    bank = {t.lower() for d in DIMENSIONS for texts in pole_requests(d).values() for t in texts}
    bank |= {t.lower() for t in neutral_replies()}
    for split in ("dev", "test"):
        held_out = load_set(split)
        assert not bank & {r.text.lower() for r in (*held_out.replies, *held_out.neutral)}
    assert {r.text for r in load_set("dev").replies}.isdisjoint(r.text for r in load_set("test").replies)
