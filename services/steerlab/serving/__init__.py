"""What every SteerLab gRPC service shares: the server (health, reflection, message limits),
Prometheus metrics, and the mapping from errors to status codes."""

from .errors import (
    AbortedError,
    AlreadyExistsError,
    DataLossError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ServiceError,
    UnavailableError,
    status_name,
)
from .server import GrpcServer, ServerSettings, ServiceBinding, run_until_signalled

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "DataLossError",
    "FailedPreconditionError",
    "GrpcServer",
    "InvalidArgumentError",
    "NotFoundError",
    "ServerSettings",
    "ServiceBinding",
    "ServiceError",
    "UnavailableError",
    "run_until_signalled",
    "status_name",
]
