"""Errors the SDK raises: one class per gRPC status code, carrying the server's code and message.

Catch :class:`ClientError` for any failure, or a subclass for one kind::

    try:
        client.sessions.get(session_id)
    except NotFound:
        ...
"""

from __future__ import annotations

import grpc


class ClientError(Exception):
    """A call failed. ``code`` is the gRPC status code; ``message`` says why, as the server put it."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> ClientError:
        """The typed exception for a failed call: a ``grpc.Call`` or ``grpc.aio.AioRpcError``
        carries the code and details; any other ``RpcError`` is UNKNOWN."""
        if isinstance(error, grpc.Call | grpc.aio.AioRpcError):
            code, details = error.code(), error.details()
        else:
            code, details = grpc.StatusCode.UNKNOWN, str(error)
        return for_code(code, details or code.name)


class InvalidArgument(ClientError):
    """The request is malformed: a bad strength, an unknown option, an oversized prompt."""


class NotFound(ClientError):
    """No such session, dimension, vector set version, alias or job."""


class AlreadyExists(ClientError):
    """The thing to create exists already."""


class FailedPrecondition(ClientError):
    """The request is valid but not now or not here (e.g. a vector set made for another model)."""


class Aborted(ClientError):
    """A concurrent change won (e.g. an ``expected_revision`` that no longer holds)."""


class ResourceExhausted(ClientError):
    """The server is full (its queue) or the message is too large; try again later or smaller."""


class Unauthenticated(ClientError):
    """The call carried no token, or the wrong one."""


class PermissionDenied(ClientError):
    """The token is valid but may not do this."""


class Unavailable(ClientError):
    """The server cannot be reached (the SDK has already retried with backoff)."""


class DeadlineExceeded(ClientError):
    """The call's deadline passed before it finished."""


class Cancelled(ClientError):
    """The call was cancelled."""


class Internal(ClientError):
    """A bug on the server; its log has the details."""


_BY_CODE: dict[grpc.StatusCode, type[ClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.DATA_LOSS: Internal,
}


def for_code(code: grpc.StatusCode, message: str) -> ClientError:
    """The exception for ``code``: a subclass of :class:`ClientError` where one fits."""
    return _BY_CODE.get(code, ClientError)(code, message)
