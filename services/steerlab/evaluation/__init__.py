"""Measure what steering does to answers."""

from .effect import EffectScorer

__all__ = ["EffectScorer"]
