"""Cache of extracted vector sets, keyed by everything that determines the result."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from steerlab.settings import steerlab_home

from .. import __version__
from .config import ExtractionConfig
from .datasets import ContrastiveDataset
from .errors import VectorSetError
from .extraction import ProgressCallback, extract
from .functional_range import range_prompts
from .models import LoadedModel
from .vectorset import VectorSet


def cache_path(lm: LoadedModel, dataset: ContrastiveDataset, config: ExtractionConfig) -> Path:
    key = json.dumps(
        {
            "model": lm.fingerprint.weights_digest,
            "dataset": dataset.content_hash,
            "config": asdict(config),
            "range_prompts": range_prompts(),  # the functional range samples answers to them
            "version": __version__,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return steerlab_home() / "vectors" / f"{dataset.dimension.name}-{digest}.safetensors"


def extract_cached(
    lm: LoadedModel,
    dataset: ContrastiveDataset,
    config: ExtractionConfig | None = None,
    *,
    progress: bool = False,
    on_progress: ProgressCallback | None = None,
) -> VectorSet:
    """Like :func:`extract`, but reuse an earlier result for the same model, data and config."""
    config = config or ExtractionConfig()
    path = cache_path(lm, dataset, config)
    if path.exists():
        try:
            return VectorSet.load(path)
        except VectorSetError:
            path.unlink()  # a corrupt cache entry is recomputed, never trusted
    vector_set = extract(lm, dataset, config, progress=progress, on_progress=on_progress)
    vector_set.save(path)
    return vector_set
