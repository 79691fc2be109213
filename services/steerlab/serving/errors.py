"""Errors a service reports to its callers, each tied to the gRPC status code that says why.

Stores and servicers raise these (or the core's errors); the server interceptor turns them
into statuses, so no handler builds a status by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

from steerlab.steering.errors import (
    DatasetError,
    ExtractionError,
    ModelLoadError,
    SteeringError,
    SteerLabError,
    VectorSetError,
    VectorSetMismatchError,
)


class ServiceError(SteerLabError):
    """A request that cannot be served; ``status`` names its gRPC status code."""

    status: ClassVar[str] = "UNKNOWN"


class InvalidArgumentError(ServiceError):
    status = "INVALID_ARGUMENT"


class NotFoundError(ServiceError):
    status = "NOT_FOUND"


class AlreadyExistsError(ServiceError):
    status = "ALREADY_EXISTS"


class FailedPreconditionError(ServiceError):
    status = "FAILED_PRECONDITION"


class AbortedError(ServiceError):
    """A concurrent change won: re-read and retry."""

    status = "ABORTED"


class ResourceExhaustedError(ServiceError):
    """The service is at capacity (queue full, budget spent); retry later."""

    status = "RESOURCE_EXHAUSTED"


class DataLossError(ServiceError):
    """Stored data failed its checksum: it is reported, never served."""

    status = "DATA_LOSS"


class DeadlineExceededError(ServiceError):
    """The caller's deadline passed before the work finished."""

    status = "DEADLINE_EXCEEDED"


class UnavailableError(ServiceError):
    """A backing store or worker cannot be reached; retrying later may succeed."""

    status = "UNAVAILABLE"


def error_for_status(status: str, message: str) -> ServiceError:
    """The error to raise for a status another service returned (by code name)."""
    for kind in ServiceError.__subclasses__():
        if kind.status == status:
            return kind(message)
    return UnavailableError(message)


@contextmanager
def relayed(source: str = "") -> Iterator[None]:
    """Inside, a failed call to another SteerLab service (a ``ClientError``) is re-raised as
    the :class:`ServiceError` for its status, its message prefixed with ``source``."""
    from steerlab_client import ClientError

    try:
        yield
    except ClientError as exc:
        raise error_for_status(exc.code.name, f"{source}: {exc.message}" if source else exc.message) from exc


# The core's errors, most specific first.
_CORE_STATUSES: tuple[tuple[type[SteerLabError], str], ...] = (
    (VectorSetMismatchError, "FAILED_PRECONDITION"),
    (VectorSetError, "INVALID_ARGUMENT"),
    (DatasetError, "INVALID_ARGUMENT"),
    (SteeringError, "INVALID_ARGUMENT"),
    (ExtractionError, "INVALID_ARGUMENT"),
    (ModelLoadError, "NOT_FOUND"),
)


def status_name(error: SteerLabError) -> str:
    """The gRPC status code name for one of SteerLab's errors."""
    if isinstance(error, ServiceError):
        return error.status
    for kind, status in _CORE_STATUSES:
        if isinstance(error, kind):
            return status
    return "INVALID_ARGUMENT"
