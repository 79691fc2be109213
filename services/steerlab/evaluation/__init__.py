"""Measure what steering does to answers.

- :mod:`.effect`: the effect metric (sentence-embedding similarity to each pole's references);
- :mod:`.fluency`: perplexity on held-out answers, and under an independent reference model;
- :mod:`.pne`: the perplexity-normalised effect of a strength sweep;
- :mod:`.stats`: bootstrap intervals and least squares for the experiment reports.

Only the effect scorer is imported here, so services that embed text stay free of scipy.
"""

from .effect import EffectScorer

__all__ = ["EffectScorer"]
