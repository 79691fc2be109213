"""The serving edge's half of the error vocabulary: which gRPC status code each kind of
:mod:`steerlab.steering.errors` error is served as. Nothing below ``serving/`` knows of gRPC."""

from __future__ import annotations

import grpc

from steerlab.steering.errors import (
    AbortedError,
    AlreadyExistsError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    SteerLabError,
    UnauthenticatedError,
    UnavailableError,
    VectorSetMismatchError,
)

# Most specific first: the first kind an error is an instance of decides its status.
STATUS_OF_KIND: tuple[tuple[type[SteerLabError], grpc.StatusCode], ...] = (
    (VectorSetMismatchError, grpc.StatusCode.FAILED_PRECONDITION),
    (InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (FailedPreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (AbortedError, grpc.StatusCode.ABORTED),
    (ResourceExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (DataLossError, grpc.StatusCode.DATA_LOSS),
    (DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
)


def status_code(error: SteerLabError) -> grpc.StatusCode:
    """The gRPC status code one of SteerLab's errors is served as (a bare one is a bad argument)."""
    for kind, code in STATUS_OF_KIND:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INVALID_ARGUMENT


def status_name(error: SteerLabError) -> str:
    """The name of :func:`status_code` (``"NOT_FOUND"``), as metrics label it."""
    return str(status_code(error).name)


def error_for_status(code: grpc.StatusCode, message: str) -> SteerLabError:
    """The error to raise for a status another service returned: the inverse of
    :func:`status_code` on the kinds (an unknown code reads as the peer being unavailable)."""
    for kind, served_as in STATUS_OF_KIND[1:]:
        if served_as == code:
            return kind(message)
    return UnavailableError(message)
