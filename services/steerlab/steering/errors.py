"""Errors raised by the steering core. Each carries a message a person can act on."""

from steerlab.errors import SteerLabError

__all__ = [
    "DatasetError",
    "ExtractionError",
    "ModelLoadError",
    "SteerLabError",
    "SteeringError",
    "UnsupportedModelError",
    "VectorSetError",
    "VectorSetMismatchError",
]


class DatasetError(SteerLabError):
    """A contrastive dataset is malformed (schema, poles, counts, duplicates)."""


class ModelLoadError(SteerLabError):
    """A model could not be found or loaded."""


class UnsupportedModelError(ModelLoadError):
    """A model loaded, but its architecture lacks what steering needs."""


class VectorSetError(SteerLabError):
    """A vector set file is malformed or corrupt."""


class VectorSetMismatchError(VectorSetError):
    """A vector set was extracted from a different model than the one it is applied to."""


class SteeringError(SteerLabError):
    """A steering request is invalid (unknown dimension, strength out of range, ...)."""


class ExtractionError(SteerLabError):
    """Extraction parameters are invalid."""
