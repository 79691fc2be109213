"""Sessions, turns and calibrations as immutable values; the store persists them as they are."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from steerlab.steering.config import MAX_PERCENT as MAX_STRENGTH
from steerlab.steering.errors import InvalidArgumentError

SELECT, CALIBRATE, LEARN = "select", "calibrate", "learn"
MODES = (SELECT, CALIBRATE, LEARN)
USER, ASSISTANT = "user", "assistant"
THUMBS_UP, THUMBS_DOWN = "up", "down"
DEFAULT_LEARNING_RATE = 50.0


def clip_strength(value: float) -> float:
    return max(-MAX_STRENGTH, min(MAX_STRENGTH, value))


def check_learning_rate(value: float) -> float:
    if not (math.isfinite(value) and 0 < value <= MAX_STRENGTH):
        raise InvalidArgumentError(f"learning_rate must be within (0, 100] percent, got {value}")
    return value


@dataclass(frozen=True)
class SteeringUsed:
    """One vector set applied to an assistant turn, exactly as used."""

    dimension: str
    vector_set_version: int
    model_digest: str
    strength: float


@dataclass(frozen=True)
class StrengthChange:
    dimension: str
    before: float
    after: float
    reason: str


@dataclass(frozen=True)
class PreferenceUpdate:
    changes: tuple[StrengthChange, ...]
    summary: str

    def to_dict(self) -> dict[str, Any]:
        return {"changes": [vars(c) for c in self.changes], "summary": self.summary}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreferenceUpdate:
        return cls(tuple(StrengthChange(**c) for c in data["changes"]), data["summary"])


@dataclass(frozen=True)
class Comparison:
    dimension: str
    round: int  # 1-based
    rounds: int
    left: float
    right: float


@dataclass(frozen=True)
class Calibration:
    """Bisection state: the interval of the dimension being calibrated, and what is left."""

    remaining: tuple[str, ...]
    rounds: int
    round: int  # 1-based round of remaining[0]
    low: float
    high: float
    results: tuple[StrengthChange, ...] = ()

    @property
    def done(self) -> bool:
        return not self.remaining

    def to_dict(self) -> dict[str, Any]:
        return {
            "remaining": list(self.remaining),
            "rounds": self.rounds,
            "round": self.round,
            "low": self.low,
            "high": self.high,
            "results": [vars(r) for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(
            remaining=tuple(data["remaining"]),
            rounds=int(data["rounds"]),
            round=int(data["round"]),
            low=float(data["low"]),
            high=float(data["high"]),
            results=tuple(StrengthChange(**r) for r in data["results"]),
        )


@dataclass(frozen=True)
class Session:
    id: str
    tenant: str
    user_id: str
    model: str
    mode: str
    strengths: dict[str, float]
    learning_rate: float
    revision: int
    created_at: datetime
    updated_at: datetime
    turn_count: int = 0
    calibration: Calibration | None = None
    # The request id of the last change, so that a retried change is not applied twice.
    last_request_id: str = ""

    def with_strengths(self, changes: dict[str, float]) -> Session:
        return replace(self, strengths={**self.strengths, **changes})


@dataclass(frozen=True)
class Turn:
    index: int
    role: str
    text: str
    created_at: datetime
    steering: tuple[SteeringUsed, ...] = ()
    rating: str | None = None
    update: PreferenceUpdate | None = field(default=None)
