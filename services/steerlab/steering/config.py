"""The parameters of the steering method, and their allowed values.

Kept free of torch so that the command line can offer the choices without loading a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ExtractionError, SteeringError

METHODS = ("logistic", "mean-diff", "pca")  # how a layer's direction is fitted (see probes)
SITES = ("norm", "residual")  # where a direction is read and added (see sites)
TOKEN_SELECTIONS = ("first", "last", "mean")  # which completion tokens an example contributes
MAX_PERCENT = 100.0  # a strength is percent of a vector set's functional range
MAX_TEMPERATURE = 2.0  # sampling temperature, as the OpenAI API bounds it
# The functional range's perplexity bound: past 10x the unsteered perplexity text is not fluent.
MAX_PERPLEXITY_BOUND = 10.0
MAX_REPETITION_BOUND = 10.0


def check_strength(name: str, percent: float, max_percent: float = MAX_PERCENT) -> float:
    """Validate one strength; out-of-range or non-finite values are refused, never clamped."""
    if not isinstance(percent, (int, float)) or not math.isfinite(percent):
        raise SteeringError(f"strength for {name!r} must be a finite number, got {percent!r}")
    if abs(percent) > max_percent:
        raise SteeringError(
            f"strength for {name!r} is {percent:g}%, outside -{max_percent:g}..{max_percent:g}"
        )
    return float(percent)


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters; ``temperature == 0`` means greedy decoding."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def validate(self) -> None:
        if not (math.isfinite(self.temperature) and 0 <= self.temperature <= MAX_TEMPERATURE):
            raise SteeringError(f"temperature must be within 0..{MAX_TEMPERATURE:g}, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise SteeringError(f"top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise SteeringError(f"top-k must be >= 0, got {self.top_k}")


def check_site(site: str) -> str:
    if site not in SITES:
        raise SteeringError(f"unknown activation site {site!r}; choose one of {', '.join(SITES)}")
    return site


# How the paper samples the answers it evaluates (DESIGN.md section 2).
PAPER_SAMPLING = Sampling(temperature=0.7, top_p=0.95, top_k=50)


@dataclass(frozen=True)
class ExtractionConfig:
    """Every parameter of an extraction; stored in the vector set."""

    method: str = "logistic"
    site: str = "norm"
    token_selection: str = "first"
    num_tokens: int = 32  # the paper used 16; see docs/method-notes.md
    score_tokens: int = 64
    top_k: int | None = None
    folds: int = 4
    range_fraction: float = 0.125
    perplexity_bound: float = 1.5
    repetition_bound: float = 1.5  # sampled answers' repeated-4-gram rate over unsteered
    seed: int = 0
    batch_size: int = 16

    def validate(self, num_layers: int) -> None:
        check_site(self.site)
        if self.method not in METHODS:
            raise ExtractionError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.token_selection not in TOKEN_SELECTIONS:
            raise ExtractionError(
                f"unknown token selection {self.token_selection!r}; "
                f"choose one of {', '.join(TOKEN_SELECTIONS)}"
            )
        if self.top_k is not None and not 1 <= self.top_k <= num_layers:
            raise ExtractionError(f"top-k must be between 1 and {num_layers}, got {self.top_k}")
        if self.folds < 2 or not 0 < self.range_fraction < 0.5:
            raise ExtractionError("folds must be >= 2 and range_fraction between 0 and 0.5")
        if self.num_tokens < 1 or self.score_tokens < 1:
            raise ExtractionError("num_tokens and score_tokens must be >= 1")
        if not (math.isfinite(self.perplexity_bound) and 1 < self.perplexity_bound <= MAX_PERPLEXITY_BOUND):
            bound = self.perplexity_bound
            raise ExtractionError(
                f"perplexity_bound must be above 1 and at most {MAX_PERPLEXITY_BOUND:g}, got {bound}"
            )
        if not (math.isfinite(self.repetition_bound) and 1 < self.repetition_bound <= MAX_REPETITION_BOUND):
            bound = self.repetition_bound
            raise ExtractionError(
                f"repetition_bound must be above 1 and at most {MAX_REPETITION_BOUND:g}, got {bound}"
            )
