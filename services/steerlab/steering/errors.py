"""SteerLab's one error vocabulary. Each error carries a message a person can act on.

The kinds say what went wrong from the caller's side (bad argument, missing thing, busy
service, ...); the core's own errors are special cases of them. Only the serving edge
(:mod:`steerlab.serving.status`) turns a kind into a gRPC status code, so everything below it,
the core, storage and the stores, raises these without knowing about gRPC. Importing this module
costs nothing (no torch), so any command can.
"""

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "DataLossError",
    "DatasetError",
    "DeadlineExceededError",
    "ExtractionError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "ModelLoadError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "SteerLabError",
    "SteeringError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnsupportedModelError",
    "VectorSetError",
    "VectorSetMismatchError",
]


class SteerLabError(Exception):
    """Base class of every error SteerLab raises on bad input or a failed dependency."""


# The kinds: what the caller should do differs between them.


class InvalidArgumentError(SteerLabError):
    """The request itself is wrong; repeating it will not help."""


class NotFoundError(SteerLabError):
    """What the request names does not exist (or is not the caller's to see)."""


class AlreadyExistsError(SteerLabError):
    """What the request would create exists already."""


class FailedPreconditionError(SteerLabError):
    """The request is well formed but the system is not in a state to serve it."""


class AbortedError(SteerLabError):
    """A concurrent change won: re-read and retry."""


class ResourceExhaustedError(SteerLabError):
    """The service is at capacity (queue full, budget spent); retry later."""


class DataLossError(SteerLabError):
    """Stored data failed its checksum: it is reported, never served."""


class DeadlineExceededError(SteerLabError):
    """The caller's deadline passed before the work finished."""


class UnauthenticatedError(SteerLabError):
    """The call carries no credential the service accepts (missing, unknown, revoked, expired)."""


class PermissionDeniedError(SteerLabError):
    """The caller is known but its role may not do this."""


class UnavailableError(SteerLabError):
    """A backing store, worker or service cannot be reached; retrying later may succeed."""


# The core's errors.


class DatasetError(InvalidArgumentError):
    """A contrastive dataset is malformed (schema, poles, counts, duplicates)."""


class ModelLoadError(NotFoundError):
    """A model could not be found or loaded."""


class UnsupportedModelError(ModelLoadError):
    """A model loaded, but its architecture lacks what steering needs."""


class VectorSetError(InvalidArgumentError):
    """A vector set file is malformed or corrupt."""


class VectorSetMismatchError(VectorSetError):
    """A vector set was extracted from a different model than the one it is applied to.

    Served as a failed precondition: the set is sound, the model it meets is not its own."""


class SteeringError(InvalidArgumentError):
    """A steering request is invalid (unknown dimension, strength out of range, ...)."""


class ExtractionError(InvalidArgumentError):
    """Extraction parameters are invalid."""
