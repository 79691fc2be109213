"""SteerLab's Python SDK: the whole platform over gRPC, with grpcio and protobuf only (no torch).

    from steerlab_client import SteerLab

    with SteerLab("localhost:50050", token=None) as steerlab:
        session = steerlab.create_session("ana", strengths={"cost": -60})
        for delta in steerlab.chat("Plan a dinner in Rome.", session=session.id):
            print(delta, end="", flush=True)

``SteerLab`` (and ``steerlab_client.aio.AsyncSteerLab``) hold one client per service:
``RegistryClient``, ``SessionClient``, ``InferenceClient`` and ``JobClient``, usable alone too.
Failures raise a subclass of :class:`ClientError` named after the gRPC status code.
"""

from .channel import NO_RETRIES, Connection, RetryPolicy, Tls
from .errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    ClientError,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from .inference import Answer, ChatStream, GenerateOptions, InferenceClient, SamplingOptions
from .jobs import JobClient
from .platform import CalibrationResult, LearnResult, SteerLab
from .registry import RegistryClient, VectorSetRef, parse_vector_set_ref
from .sessions import SessionClient

__all__ = [
    "NO_RETRIES",
    "Aborted",
    "AlreadyExists",
    "Answer",
    "CalibrationResult",
    "Cancelled",
    "ChatStream",
    "ClientError",
    "Connection",
    "DeadlineExceeded",
    "FailedPrecondition",
    "GenerateOptions",
    "InferenceClient",
    "Internal",
    "InvalidArgument",
    "JobClient",
    "LearnResult",
    "NotFound",
    "PermissionDenied",
    "RegistryClient",
    "ResourceExhausted",
    "RetryPolicy",
    "SamplingOptions",
    "SessionClient",
    "SteerLab",
    "Tls",
    "Unauthenticated",
    "Unavailable",
    "VectorSetRef",
    "parse_vector_set_ref",
]
