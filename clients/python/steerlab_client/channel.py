"""What every client shares: one channel, a deadline per call, and errors as :class:`ClientError`."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import grpc

from .errors import ClientError

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_Response = TypeVar("_Response")


class ServiceClient:
    """A channel to one service at ``target`` (``host:port``); use as a context manager or ``close()``."""

    def __init__(
        self, target: str, timeout_s: float = 30.0, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ):
        self.target = target
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _call(self, method: Callable[..., _Response], request: Any) -> _Response:
        try:
            return method(request, timeout=self.timeout_s)
        except grpc.RpcError as error:
            raise ClientError.from_rpc_error(error) from None
