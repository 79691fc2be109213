"""Small statistics for experiment reports: means with bootstrap intervals, least squares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 4000


@dataclass(frozen=True)
class Estimate:
    """A mean with a percentile-bootstrap confidence interval (95% by default)."""

    mean: float
    low: float
    high: float
    n: int

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def bootstrap_mean(values: Sequence[float], *, level: float = 0.95, seed: int = 0) -> Estimate:
    """Mean of ``values`` with a bootstrap interval over the values (e.g. prompts)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("no values to estimate from")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(BOOTSTRAP_RESAMPLES, data.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Estimate(float(data.mean()), float(low), float(high), int(data.size))


def standard_error(values: Sequence[float]) -> float:
    data = np.asarray(values, dtype=float)
    return float(data.std(ddof=1) / np.sqrt(data.size)) if data.size > 1 else 0.0


@dataclass(frozen=True)
class LinearFit:
    """Ordinary least squares ``y = X @ coefficients`` with classical standard errors."""

    coefficients: np.ndarray
    standard_errors: np.ndarray


def least_squares(design: np.ndarray, targets: Sequence[float]) -> LinearFit:
    y = np.asarray(targets, dtype=float)
    coefficients, *_ = np.linalg.lstsq(design, y, rcond=None)
    dof = max(len(y) - design.shape[1], 1)
    residual_variance = float(np.sum((y - design @ coefficients) ** 2)) / dof
    covariance = residual_variance * np.linalg.pinv(design.T @ design)
    return LinearFit(coefficients, np.sqrt(np.diag(covariance)))
