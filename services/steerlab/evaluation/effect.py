"""The effect metric: how far an answer leans toward a dimension's positive pole.

effect(text) = cos(e(text), mean e(positive references)) - cos(e(text), mean e(negative references))

with e() a sentence embedding (all-MiniLM-L6-v2 unless the scorer is given another, such as the
second protocol's all-mpnet-base-v2). The references are per pole and never used for extraction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
        """Unit-normalised sentence embeddings [n, width]."""
        return self._embedder.embed(texts)

    def pole_centroids(
        self, dimension: Dimension, evaluation: EvaluationSet
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit mean embeddings of the (negative, positive) pole's reference texts (cached)."""
        return self._pole_centroids(
            (evaluation.reference[dimension.negative_pole], evaluation.reference[dimension.positive_pole])
        )

    def _pole_centroids(
        self, key: tuple[tuple[str, ...], tuple[str, ...]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if key not in self._centroids:
            negative, positive = (self.embed(texts).mean(0) for texts in key)
            self._centroids[key] = (negative / negative.norm(), positive / positive.norm())
        return self._centroids[key]

    def effect(self, texts: Sequence[str], dimension: Dimension, evaluation: EvaluationSet) -> list[float]:
        """Per text: cosine to the positive centroid minus cosine to the negative one."""
        references = (
            evaluation.reference[dimension.negative_pole],
            evaluation.reference[dimension.positive_pole],
        )
        return self.effects(texts, {dimension.name: references})[dimension.name]

    def effects(
        self, texts: Sequence[str], poles: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]
    ) -> dict[str, list[float]]:
        """The effect of each text on every named (negative, positive) pair of reference texts,
        embedding the texts once."""
        embedded = self.embed(texts)
        result = {}
        for name, references in poles.items():
            negative, positive = self._pole_centroids(references)
            result[name] = (embedded @ positive - embedded @ negative).tolist()
        return result
