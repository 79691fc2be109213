"""Small statistics for experiment reports: means with bootstrap intervals, least squares, rank
trends tested by cluster."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

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
    return bootstrap_statistic(
        np.asarray(values, dtype=float)[:, None], lambda means: means[..., 0], level=level, seed=seed
    )


def bootstrap_statistic(
    table: ArrayLike,
    statistic: Callable[[np.ndarray], np.ndarray | float],
    *,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """``statistic`` of the column means of ``table`` (one row per cluster, e.g. a prompt), with
    a percentile-bootstrap interval that resamples whole rows. ``statistic`` maps an array whose
    last axis holds the column means to one value per leading index (a ratio of two columns,
    say), so every resample is computed at once."""
    data = np.asarray(table, dtype=float)
    if data.ndim != 2 or data.shape[0] == 0:
        raise ValueError("need a 2-D table with at least one row to estimate from")
    rng = np.random.default_rng(seed)
    resampled = data[rng.integers(0, data.shape[0], size=(BOOTSTRAP_RESAMPLES, data.shape[0]))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(np.asarray(statistic(resampled), dtype=float), [tail, 100 - tail])
    return Estimate(float(statistic(data.mean(axis=0))), float(low), float(high), int(data.shape[0]))


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


@dataclass(frozen=True)
class RankTest:
    """Spearman's rank correlation with a one-sided p-value for rho > 0."""

    rho: float  # over all rows
    p_value: float
    permutations: int


def clustered_spearman(
    xs: ArrayLike, ys: ArrayLike, clusters: ArrayLike, *, permutations: int = 4000, seed: int = 0
) -> RankTest:
    """Spearman's rho of ``ys`` on ``xs`` over all rows, tested with the cluster (e.g. a prompt
    and all its answers) as the unit: each cluster's own rank correlation is one observation, and
    the p-value is that of their mean under random sign flips (no trend: a cluster's correlation
    is as likely negative as positive). Many answers to few prompts thus count as few prompts,
    and effects that differ between prompts around a mean of zero do not pass for a trend."""
    from scipy.stats import spearmanr

    x, y, group = (np.asarray(v) for v in (xs, ys, clusters))
    pooled = _spearman(spearmanr, x, y)
    per_cluster = np.array([_spearman(spearmanr, x[group == g], y[group == g]) for g in np.unique(group)])
    per_cluster = np.nan_to_num(per_cluster)  # a cluster whose effects never vary shows no trend
    observed = float(per_cluster.mean())
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(permutations, per_cluster.size))
    null = (signs * per_cluster).mean(axis=1)
    p_value = (1 + int(np.sum(null >= observed - 1e-12))) / (permutations + 1)
    return RankTest(pooled, p_value, permutations)


def _spearman(spearmanr: Any, x: np.ndarray, y: np.ndarray) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(spearmanr(x, y).statistic)
