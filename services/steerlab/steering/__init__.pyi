"""Names of the steering core; see ``__init__.py``. Read by type checkers and by lazy_loader."""

from .adapters import KNOWN_ARCHITECTURES, ArchitectureAdapter, adapt
from .apply import plan_rows, steer
from .batching import Strengths
from .catalog import BUILTIN_MODELS
from .config import METHODS, SITES, ExtractionConfig, Sampling, check_strength
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
from .extraction import default_top_k, extract
from .generation import generate
from .models import LoadedModel, ModelFingerprint, load_model, wrap_model
from .vectorset import LayerScore, VectorSet, orthogonalised

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
    "orthogonalised",
    "parse_dataset",
    "plan_rows",
    "steer",
    "wrap_model",
]
