"""CALIBRATE: bisection over A/B comparisons with a simulated chooser."""

from __future__ import annotations

import pytest

from steerlab.sessions import calibrate
from steerlab.steering.errors import FailedPreconditionError, InvalidArgumentError


def run_chooser(target: float, rounds: int = 3) -> float:
    """A user who always picks the side whose strength is closer to its hidden target."""
    state = calibrate.start(["cost"], rounds)
    fixed = None
    while (comparison := calibrate.pending(state)) is not None:
        side = (
            calibrate.LEFT
            if abs(comparison.left - target) <= abs(comparison.right - target)
            else calibrate.RIGHT
        )
        state, fixed = calibrate.choose(state, comparison.dimension, comparison.round, side, before=0.0)
    assert fixed is not None and state.done
    return fixed.after


@pytest.mark.parametrize("target", [-100, -97.5, -60, -33.3, -12.5, 0, 7, 25, 49.9, 50, 81, 100])
def test_three_rounds_end_within_an_eighth_of_the_range(target: float) -> None:
    assert abs(run_chooser(target) - target) <= 200 / 8


def test_more_rounds_narrow_further() -> None:
    assert all(abs(run_chooser(t, rounds=5) - t) <= 200 / 32 for t in (-88.0, -3.0, 41.0, 99.0))


def test_comparisons_are_the_quartiles_of_the_interval_and_dimensions_follow_in_order() -> None:
    state = calibrate.start(["cost", "age"], rounds=2)
    first = calibrate.pending(state)
    assert first is not None and (first.dimension, first.round, first.left, first.right) == (
        "cost",
        1,
        -50,
        50,
    )
    state, _ = calibrate.choose(state, "cost", 1, calibrate.RIGHT, before=0.0)
    second = calibrate.pending(state)
    assert second is not None and (second.left, second.right) == (25, 75)
    state, fixed = calibrate.choose(state, "cost", 2, calibrate.LEFT, before=10.0)
    assert fixed is not None and (fixed.before, fixed.after) == (10.0, 25.0)
    assert "cost set to +25% after 2 comparisons" in fixed.reason
    following = calibrate.pending(state)
    assert following is not None and (following.dimension, following.round, following.left) == ("age", 1, -50)
    assert state.results == (fixed,)


def test_stale_or_repeated_answers_and_bad_requests_are_refused() -> None:
    state = calibrate.start(["cost"], rounds=3)
    state, _ = calibrate.choose(state, "cost", 1, calibrate.LEFT, before=0.0)
    with pytest.raises(FailedPreconditionError, match="pending comparison is cost round 2"):
        calibrate.choose(state, "cost", 1, calibrate.LEFT, before=0.0)  # the same answer again
    with pytest.raises(InvalidArgumentError, match="left or the right"):
        calibrate.choose(state, "cost", 2, "middle", before=0.0)
    with pytest.raises(InvalidArgumentError, match="rounds must be within"):
        calibrate.start(["cost"], rounds=0)
    with pytest.raises(InvalidArgumentError, match="at least one dimension"):
        calibrate.start([], rounds=3)
    with pytest.raises(InvalidArgumentError, match="named twice"):
        calibrate.start(["cost", "cost"], rounds=3)
