"""CALIBRATE: find a user's strength on a dimension by bisection over A/B comparisons.

Each round shows one prompt answered at two strengths, the quartile points of the current
interval; the user's pick keeps the half it lies in. After ``rounds`` picks the strength is
the midpoint of what is left: within 200 / 2**(rounds+1) points of any strength the user
consistently prefers (12.5 points after 3 rounds).
"""

from __future__ import annotations

from dataclasses import replace

from steerlab.steering.config import MAX_PERCENT as MAX_STRENGTH
from steerlab.steering.errors import FailedPreconditionError, InvalidArgumentError

from .state import Calibration, Comparison, StrengthChange

DEFAULT_ROUNDS = 3
MAX_ROUNDS = 10
LEFT, RIGHT = "left", "right"


def start(dimensions: list[str], rounds: int = DEFAULT_ROUNDS) -> Calibration:
    if not dimensions:
        raise InvalidArgumentError("name at least one dimension to calibrate")
    if len(set(dimensions)) != len(dimensions):
        raise InvalidArgumentError(f"a dimension is named twice: {dimensions}")
    if not 1 <= rounds <= MAX_ROUNDS:
        raise InvalidArgumentError(f"rounds must be within 1..{MAX_ROUNDS}, got {rounds}")
    return Calibration(tuple(dimensions), rounds, 1, -MAX_STRENGTH, MAX_STRENGTH)


def pending(calibration: Calibration) -> Comparison | None:
    """The comparison to show now; None when the calibration is done."""
    if calibration.done:
        return None
    width = calibration.high - calibration.low
    return Comparison(
        dimension=calibration.remaining[0],
        round=calibration.round,
        rounds=calibration.rounds,
        left=calibration.low + width / 4,
        right=calibration.low + 3 * width / 4,
    )


def choose(
    calibration: Calibration, dimension: str, round_number: int, side: str, before: float
) -> tuple[Calibration, StrengthChange | None]:
    """Apply the user's pick; returns the new state and the strength fixed by it, if any.

    ``dimension`` and ``round_number`` must name the pending comparison, so an answer sent
    twice, or to a comparison that has moved on, is refused rather than applied again.
    """
    comparison = pending(calibration)
    if comparison is None:
        raise FailedPreconditionError("the calibration is already done")
    if (dimension, round_number) != (comparison.dimension, comparison.round):
        raise FailedPreconditionError(
            f"the pending comparison is {comparison.dimension} round {comparison.round}, "
            f"not {dimension} round {round_number}; call GetCalibration to resume"
        )
    if side not in (LEFT, RIGHT):
        raise InvalidArgumentError("choose the left or the right answer")
    middle = (calibration.low + calibration.high) / 2
    low, high = (calibration.low, middle) if side == LEFT else (middle, calibration.high)
    if calibration.round < calibration.rounds:
        return replace(calibration, round=calibration.round + 1, low=low, high=high), None
    strength = round((low + high) / 2, 2)
    fixed = StrengthChange(
        dimension,
        before,
        strength,
        f"{dimension} set to {strength:+.0f}% after {calibration.rounds} comparisons",
    )
    following = Calibration(
        remaining=calibration.remaining[1:],
        rounds=calibration.rounds,
        round=1,
        low=-MAX_STRENGTH,
        high=MAX_STRENGTH,
        results=(*calibration.results, fixed),
    )
    return following, fixed
