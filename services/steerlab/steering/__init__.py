"""The steering core shared by every SteerLab service.

Extract a vector set from a contrastive dataset, save it, and steer generation with any mix
of vector sets, a different mix per row of a batch::

    from steerlab.steering import load_model, builtin_dataset, extract, generate

    lm = load_model("smollm2-135m")
    cost = extract(lm, builtin_dataset("cost"))
    cost.save("cost.safetensors")
    generate(lm, ["Plan a dinner in Rome."] * 2, vector_sets=[cost],
             strengths=[{"cost": -100}, {"cost": 100}])
"""

from .adapters import KNOWN_ARCHITECTURES, ArchitectureAdapter, adapt
from .apply import Strengths, check_strength, plan_rows, steer
from .datasets import (
    BUILTIN_DIMENSIONS,
    ContrastiveDataset,
    Dimension,
    Example,
    builtin_dataset,
    builtin_evaluation_set,
    load_dataset,
    parse_dataset,
)
from .errors import (
    DatasetError,
    ExtractionError,
    ModelLoadError,
    SteeringError,
    SteerLabError,
    UnsupportedModelError,
    VectorSetError,
    VectorSetMismatchError,
)
from .extraction import ExtractionConfig, default_top_k, extract
from .generation import Sampling, generate
from .models import BUILTIN_MODELS, LoadedModel, ModelFingerprint, load_model, wrap_model
from .probes import METHODS
from .sites import SITES
from .vectorset import LayerScore, VectorSet

__all__ = [
    "BUILTIN_DIMENSIONS",
    "BUILTIN_MODELS",
    "KNOWN_ARCHITECTURES",
    "METHODS",
    "SITES",
    "ArchitectureAdapter",
    "ContrastiveDataset",
    "DatasetError",
    "Dimension",
    "Example",
    "ExtractionConfig",
    "ExtractionError",
    "LayerScore",
    "LoadedModel",
    "ModelFingerprint",
    "ModelLoadError",
    "Sampling",
    "SteerLabError",
    "SteeringError",
    "Strengths",
    "UnsupportedModelError",
    "VectorSet",
    "VectorSetError",
    "VectorSetMismatchError",
    "adapt",
    "builtin_dataset",
    "builtin_evaluation_set",
    "check_strength",
    "default_top_k",
    "extract",
    "generate",
    "load_dataset",
    "load_model",
    "parse_dataset",
    "plan_rows",
    "steer",
    "wrap_model",
]
