"""LEARN's update rule and what a reader of replies returns.

After each user turn, for every dimension::

    d <- clip(d + eta * dissatisfaction * direction, -100, 100)

A reader (:class:`FeedbackInterpreter`) turns the user's reply into one :class:`Signal` per
dimension (direction +1, -1 or 0, and dissatisfaction 0..1) and, when nothing moves, says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from steerlab.steering.datasets import Dimension

from ..state import PreferenceUpdate, StrengthChange, clip_strength

NOTHING_ASKED = "no change: nothing said asks for more or less of any dimension"


@dataclass(frozen=True)
class Signal:
    """What one user message says about one dimension."""

    dimension: str
    direction: int  # +1 toward the positive pole, -1 toward the negative, 0 neither
    dissatisfaction: float  # 0..1
    quote: str  # the words that decided


@dataclass(frozen=True)
class Reading:
    """A reply as LEARN read it: one signal per dimension, and why nothing moved, if it did not."""

    signals: tuple[Signal, ...]
    why_not: str = NOTHING_ASKED  # shown when no signal moves anything
    note: str = ""  # appended to every summary (e.g. that a long reply was cut)

    def moved(self) -> dict[str, int]:
        """Dimension -> direction, for the signals that move something."""
        return {s.dimension: s.direction for s in self.signals if s.direction and s.dissatisfaction > 0}


def still(dimensions: Sequence[Dimension], why_not: str, note: str = "") -> Reading:
    """A reading that moves nothing, and why."""
    return Reading(tuple(Signal(d.name, 0, 0.0, "") for d in dimensions), why_not, note)


class FeedbackInterpreter(Protocol):
    """Reads a user's reply, in the context of the assistant's previous answer. Thread-safe."""

    def interpret(
        self,
        text: str,
        dimensions: Sequence[Dimension],
        previous: str = "",
        dissatisfaction: float | None = None,
    ) -> Reading:
        """``dissatisfaction`` overrides the reader's own (a thumbs down counts 1)."""
        ...

    def warm_up(self, dimensions: Sequence[Dimension]) -> None:
        """Do the one-off work for ``dimensions`` now, so that the first user turn is not slow."""
        ...


def apply_signals(
    strengths: dict[str, float], reading: Reading, learning_rate: float
) -> tuple[dict[str, float], PreferenceUpdate]:
    """The new strengths after ``reading``, and what changed and why (or why nothing did)."""
    updated = dict(strengths)
    changes = []
    for signal in reading.signals:
        step = learning_rate * signal.dissatisfaction * signal.direction
        if step == 0:
            continue
        before = strengths.get(signal.dimension, 0.0)
        after = round(clip_strength(before + step), 2)
        if after == before:
            continue
        updated[signal.dimension] = after
        changes.append(
            StrengthChange(
                signal.dimension, before, after, _reason(signal.dimension, before, after, signal.quote)
            )
        )
    if changes:
        summary = "; ".join(change.reason for change in changes)
    elif reading.moved():
        summary = "no change: what was asked for is already at the end of its range"
    else:
        summary = reading.why_not
    if reading.note:
        summary += f" ({reading.note})"
    return updated, PreferenceUpdate(tuple(changes), summary)


def _reason(dimension: str, before: float, after: float, quote: str) -> str:
    shown = quote if len(quote) <= 80 else quote[:77] + "..."
    return f"{dimension} {after - before:+.0f}%: '{shown}'"
