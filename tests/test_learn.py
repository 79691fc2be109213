"""LEARN with simulated users (the paper's E4 setting) and the pieces it is made of.

The simulated users (steerlab.experiments.users) are told how far the strength is from their
target; E4 (steerlab experiments run e4) has them read the answers instead.
"""

from __future__ import annotations

import random

import pytest

from steerlab.experiments.users import TOLERANCE, TURNS, replies, reply
from steerlab.sessions.learn import FeedbackInterpreter, Signal, apply_signals, pole_requests, split_sentences
from steerlab.sessions.state import DEFAULT_LEARNING_RATE as LEARNING_RATE
from steerlab.steering.datasets import BUILTIN_DIMENSIONS, Dimension, builtin_dimensions

REPLIES = replies()
DIMENSIONS = builtin_dimensions()


@pytest.fixture(scope="module")
def interpreter() -> FeedbackInterpreter:
    return FeedbackInterpreter()


def run_user(
    interpreter: FeedbackInterpreter, dimension: str, target: float, rng: random.Random
) -> dict[str, float]:
    strengths: dict[str, float] = {}
    for _ in range(TURNS):
        text = reply(dimension, target - strengths.get(dimension, 0.0), rng)
        signals = interpreter.interpret(text, DIMENSIONS)
        strengths, _update = apply_signals(strengths, signals, LEARNING_RATE)
    return strengths


def test_learn_brings_most_simulated_users_within_25_points_in_12_turns(
    interpreter: FeedbackInterpreter,
) -> None:
    rng = random.Random(0)
    outcomes = []
    for dimension in BUILTIN_DIMENSIONS:
        for _ in range(10):
            target = rng.choice([-1, 1]) * rng.uniform(30, 100)  # a clear, hidden preference
            final = run_user(interpreter, dimension, target, rng).get(dimension, 0.0)
            outcomes.append((dimension, round(target), final, abs(final - target) <= TOLERANCE))
    converged = sum(ok for *_, ok in outcomes) / len(outcomes)
    assert converged >= 0.8, outcomes


def test_a_satisfied_user_moves_nothing(interpreter: FeedbackInterpreter) -> None:
    rng = random.Random(1)
    for dimension in BUILTIN_DIMENSIONS:
        assert run_user(interpreter, dimension, target=rng.uniform(-20, 20), rng=rng) == {}


def test_a_complaint_moves_its_dimension_with_a_readable_reason(interpreter: FeedbackInterpreter) -> None:
    text = REPLIES["cost"]["toward_negative"]["strong"][0]
    strengths, update = apply_signals({"cost": 50.0}, interpreter.interpret(text, DIMENSIONS), LEARNING_RATE)
    assert strengths["cost"] < 50.0
    (change,) = [c for c in update.changes if c.dimension == "cost"]
    assert change.reason.startswith(f"cost {change.after - 50.0:+.0f}%: '")
    assert change.reason.rstrip("'").split("'", 1)[1] in text  # quotes what the user said


def test_thumbs_down_counts_as_full_dissatisfaction(interpreter: FeedbackInterpreter) -> None:
    text = "Could we find something a bit cheaper?"
    mild = {s.dimension: s for s in interpreter.interpret(text, DIMENSIONS)}["cost"]
    down = {s.dimension: s for s in interpreter.interpret(text, DIMENSIONS, dissatisfaction=1.0)}["cost"]
    assert mild.direction == down.direction == -1
    assert down.dissatisfaction == 1.0 > mild.dissatisfaction


def test_steps_are_clipped_to_the_range_and_unchanged_dimensions_are_left_out() -> None:
    signals = [
        Signal("cost", 1, 1.0, "fancier!"),
        Signal("age", 0, 0.0, ""),
        Signal("time", -1, 0.5, "later"),
    ]
    strengths, update = apply_signals({"cost": 90.0, "time": -100.0}, signals, LEARNING_RATE)
    assert strengths == {"cost": 100.0, "time": -100.0}
    assert [c.dimension for c in update.changes] == ["cost"]
    _, nothing = apply_signals({}, [Signal("cost", 0, 0.0, "")], LEARNING_RATE)
    assert nothing.changes == () and nothing.summary.startswith("no change")


def test_custom_dimensions_get_requests_built_from_their_poles() -> None:
    spice = Dimension("spice", "mild", "hot", "How spicy the food is.")
    requests = pole_requests(spice)
    assert set(requests) == {"mild", "hot"}
    assert any("too hot" in r for r in requests["mild"]) and any("more hot" in r for r in requests["hot"])
    assert len(pole_requests(DIMENSIONS[0])[DIMENSIONS[0].negative_pole]) == 30  # the shipped bank


def test_messages_are_split_into_clauses() -> None:
    assert split_sentences("Too pricey. Something cheaper?\nThanks!") == [
        "Too pricey.",
        "Something cheaper?",
        "Thanks!",
    ]
    assert split_sentences("Cheap and cheerful, but we want brunch") == [
        "Cheap and cheerful",
        "we want brunch",
    ]


def test_each_clause_can_move_its_own_dimension(interpreter: FeedbackInterpreter) -> None:
    text = "My kids are coming too, and we'd rather go in the morning."
    moved = {s.dimension: s for s in interpreter.interpret(text, DIMENSIONS) if s.direction}
    assert set(moved) == {"age", "time"}
    assert (moved["age"].direction, moved["age"].quote) == (-1, "My kids are coming too")
    assert (moved["time"].direction, moved["time"].quote) == (1, "we'd rather go in the morning.")
