"""Perplexity-normalised effect (PNE), after von Rütte et al. (2024), "A Language Model's Guide
Through Latent Space", section 4 and their evaluation script.

Over a sweep of steering coefficients alpha, with ``alpha0`` the point nearest 0:

    y(alpha) = (effect(alpha) - effect(alpha0)) / (ppl(alpha) / ppl(alpha0))

Perplexity growth is fitted as ``log(ppl/ppl0) = b * alpha^2``; then
``y(alpha) ~ (tanh(a * alpha) + c) * exp(-b * alpha^2)`` is fitted with that ``b``, and the PNE is
the fitted curve's maximum minus its minimum over the swept range. A guide that moves the concept
a lot before fluency collapses scores high; one that only moves it by breaking the text scores low.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit

# Points whose perplexity grew past this factor are left out of the perplexity fit (as in the
# reference script), since broken text makes log-perplexity saturate rather than grow as alpha^2.
PERPLEXITY_FIT_CUTOFF = 2e3
CURVE_POINTS = 400


@dataclass(frozen=True)
class PneFit:
    pne: float  # max - min of the fitted curve over the swept range
    measured_pne: float  # max - min of the normalised effects themselves, for comparison
    r_squared: float
    tanh_scale: float  # a
    offset: float  # c
    curvature: float  # b

    def to_dict(self) -> dict[str, float]:
        return dict(vars(self))


def normalised_effects(
    alphas: Sequence[float], effects: Sequence[float], perplexities: Sequence[float]
) -> np.ndarray:
    """``y(alpha)``: the effect gained over alpha0, divided by the perplexity ratio."""
    xs, effect, ppl = (np.asarray(v, dtype=float) for v in (alphas, effects, perplexities))
    base = int(np.argmin(np.abs(xs)))
    result: np.ndarray = (effect - effect[base]) / (ppl / ppl[base])
    return result


def _pne_curve(x: np.ndarray, a: float, c: float, b: float) -> np.ndarray:
    curve: np.ndarray = (np.tanh(a * x) + c) / np.exp(b * x**2)
    return curve


def fit_pne(alphas: Sequence[float], effects: Sequence[float], perplexities: Sequence[float]) -> PneFit:
    """Fit the PNE curve to one sweep. At least three alphas are needed."""
    xs = np.asarray(alphas, dtype=float)
    ppl = np.asarray(perplexities, dtype=float)
    if len(xs) < 3:
        raise ValueError("a PNE fit needs at least three alphas")
    ys = normalised_effects(alphas, effects, perplexities)
    ratio = ppl / ppl[int(np.argmin(np.abs(xs)))]
    usable = ratio < PERPLEXITY_FIT_CUTOFF
    (b,), _ = curve_fit(lambda x, b: b * x**2, xs[usable], np.log(ratio[usable]), p0=[0.05], maxfev=20000)
    try:
        (a, c), _ = curve_fit(lambda x, a, c: _pne_curve(x, a, c, b), xs, ys, p0=[0.0, 0.0], maxfev=20000)
    except RuntimeError:  # no convergence: report the measured spread only
        a = c = float("nan")
    residuals = ys - _pne_curve(xs, a, c, b)
    total = float(np.sum((ys - ys.mean()) ** 2))
    r_squared = 1 - float(np.sum(residuals**2)) / total if total > 0 else float("nan")
    dense = _pne_curve(np.linspace(xs.min(), xs.max(), CURVE_POINTS), a, c, b)
    return PneFit(
        pne=float(dense.max() - dense.min()),
        measured_pne=float(ys.max() - ys.min()),
        r_squared=r_squared,
        tanh_scale=float(a),
        offset=float(c),
        curvature=float(b),
    )
