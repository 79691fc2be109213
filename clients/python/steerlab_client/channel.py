"""What every client shares: one channel, a deadline per call, a token, and retries.

A :class:`Connection` is one gRPC channel to one address; several service clients can share it
(the all-in-one server serves every service on one port). Calls that fail with UNAVAILABLE (the
server is down, restarting or unreachable) are retried with exponential backoff and jitter; a
streaming call is retried only until its first message arrives, so nothing is ever repeated.

Retrying is safe because every call that creates or appends carries a request id
(:func:`new_request_id`, made once per call and resent with each retry) that the server
deduplicates; the one call that has none (rating a turn) is never retried.
"""

from __future__ import annotations

import copy
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from .errors import ClientError

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_Response = TypeVar("_Response")
_Connection = TypeVar("_Connection")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a call that failed with UNAVAILABLE.

    ``attempts`` counts the first try; 1 disables retries. The wait before retry ``n`` is
    ``initial_backoff_s * multiplier**(n-1)``, capped at ``max_backoff_s``, times a random factor
    in [0.5, 1] so that many clients do not retry in step. Retries never outlast the deadline.
    """

    attempts: int = 4
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and the multiplier >= 1")

    def backoff_s(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1-based)."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (retry - 1))
        return base * random.uniform(0.5, 1.0)

    def wait_or_raise(self, error: grpc.RpcError, attempt: int, deadline: float | None) -> float:
        """After failed try ``attempt``: how long to wait before the next, or the typed error
        raised when the failure is not UNAVAILABLE, the tries are spent or the deadline is near."""
        failure = ClientError.from_rpc_error(error)
        if failure.code == grpc.StatusCode.UNAVAILABLE and attempt < self.attempts:
            wait = self.backoff_s(attempt)
            if deadline is None or time.monotonic() + wait < deadline:
                return wait
        raise failure from None


def new_request_id(request_id: str = "") -> str:
    """``request_id``, or a new random one: the idempotency key of one create or append call."""
    return request_id or uuid.uuid4().hex


DEFAULT_RETRY = RetryPolicy()
NO_RETRIES = RetryPolicy(attempts=1)


@dataclass(frozen=True)
class Tls:
    """How a client reaches a TLS server. ``ca``: a PEM file of the CA that signed the server's
    certificate, or ``"system"`` for the system's roots; ``cert`` and ``key``: the client's own
    certificate and key, for a server that requires mutual TLS. ``Tls()`` means plaintext.
    """

    ca: str = ""
    cert: str = ""
    key: str = ""

    @classmethod
    def from_env(cls) -> Tls:
        """``STEERLAB_TLS_CA``, ``STEERLAB_TLS_CLIENT_CERT`` and ``STEERLAB_TLS_CLIENT_KEY``."""
        env = os.environ
        return cls(
            env.get("STEERLAB_TLS_CA", ""),
            env.get("STEERLAB_TLS_CLIENT_CERT", ""),
            env.get("STEERLAB_TLS_CLIENT_KEY", ""),
        )

    @property
    def enabled(self) -> bool:
        return bool(self.ca)

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials: the CA (None: system roots) and the client certificate, if any."""
        ca = None if self.ca == "system" else Path(self.ca).read_bytes()
        cert = Path(self.cert).read_bytes() if self.cert else None
        key = Path(self.key).read_bytes() if self.key else None
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def open_channel(target: str, max_message_bytes: int, tls: Tls | None, *, aio: bool = False) -> Any:
    """A channel to ``target``: TLS when ``tls`` (None: from the environment) names a CA, else
    plaintext; ``aio`` for a ``grpc.aio`` channel."""
    tls = Tls.from_env() if tls is None else tls
    options = channel_options(max_message_bytes)
    module: Any = grpc.aio if aio else grpc
    if tls.enabled:
        return module.secure_channel(target, tls.credentials(), options=options)
    return module.insecure_channel(target, options=options)


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata for ``token``; None means the ``STEERLAB_TOKEN`` variable, "" none."""
    token = os.environ.get("STEERLAB_TOKEN", "") if token is None else token
    return (("authorization", f"Bearer {token}"),) if token else ()


class Connection:
    """One channel to ``target`` (``host:port``) and the defaults of every call made on it."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        tls: Tls | None = None,
    ) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.retry = retry
        self.metadata = auth_metadata(token)
        self.channel = open_channel(target, max_message_bytes, tls)

    def close(self) -> None:
        self.channel.close()

    def with_token(self, token: str) -> Connection:
        """The same channel, sending ``token`` instead (e.g. a service calling another on a
        user's behalf); closing the original closes both."""
        other = copy.copy(self)
        other.metadata = auth_metadata(token)
        return other

    def unary(
        self,
        method: Callable[..., _Response],
        request: Any,
        timeout_s: float | None = None,
        *,
        retry: bool = True,
    ) -> _Response:
        """Call ``method``; retry on UNAVAILABLE within the deadline (unless ``retry`` is False,
        for a call that is not safe to repeat); raise :class:`ClientError`."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        for attempt in range(1, (self.retry.attempts if retry else 1) + 1):
            try:
                return method(request, timeout=remaining_s(deadline), metadata=self.metadata)
            except grpc.RpcError as error:
                time.sleep(self.retry.wait_or_raise(error, attempt, deadline))
        raise AssertionError("unreachable")  # pragma: no cover

    def stream(self, method: Callable[..., Any], request: Any, timeout_s: float | None) -> Iterator[Any]:
        """Yield a server stream's messages; retry on UNAVAILABLE until the first one arrives.

        ``timeout_s`` None means no deadline (e.g. watching a job for hours). Closing the
        iterator early cancels the call on the server.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for attempt in range(1, self.retry.attempts + 1):
            call = method(request, timeout=remaining_s(deadline), metadata=self.metadata)
            received = False
            try:
                for message in call:
                    received = True
                    yield message
                return
            except grpc.RpcError as error:
                if received:
                    raise ClientError.from_rpc_error(error) from None
                time.sleep(self.retry.wait_or_raise(error, attempt, deadline))
            finally:
                call.cancel()


def connect_services(
    address: str | None, targets: Mapping[str, str | None], connect: Callable[[str], _Connection]
) -> dict[str, _Connection]:
    """Each service's connection, by service name: to its own target, else to ``address``; services
    at one target share one connection (``connect(target)`` is called once per distinct target)."""
    by_target: dict[str, _Connection] = {}
    connections = {}
    for service, own_target in targets.items():
        target = own_target or address
        if not target:
            raise ValueError(f"no address for the {service} service: pass address or {service}=")
        if target not in by_target:
            by_target[target] = connect(target)
        connections[service] = by_target[target]
    return connections


def remaining_s(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (a ``time.monotonic()`` value), at least 1 ms; None: none."""
    return None if deadline is None else max(0.001, deadline - time.monotonic())


class ServiceClient:
    """A client of one service: over its own channel to ``target``, or over a shared ``Connection``.

    ``timeout_s`` is the deadline of each call (default :attr:`default_timeout_s`); ``token`` is
    sent as ``authorization: Bearer <token>`` (None: ``STEERLAB_TOKEN``); ``tls`` says how to
    reach a TLS server (None: :meth:`Tls.from_env`). Use as a context manager or call ``close()``;
    closing a client closes only a channel it owns.
    """

    default_timeout_s = 30.0

    def __init__(
        self,
        target: str | Connection,
        timeout_s: float | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        *,
        token: str | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        tls: Tls | None = None,
    ):
        self.timeout_s = timeout_s or self.default_timeout_s
        if isinstance(target, Connection):
            self.connection, self._owns_connection = target, False
        else:
            self.connection = Connection(
                target,
                token=token,
                timeout_s=self.timeout_s,
                retry=retry,
                max_message_bytes=max_message_bytes,
                tls=tls,
            )
            self._owns_connection = True
        self.target = self.connection.target
        self._bind(self.connection.channel)

    def _bind(self, channel: grpc.Channel) -> None:
        """Create the service's stub on ``channel``."""
        raise NotImplementedError

    def close(self) -> None:
        if self._owns_connection:
            self.connection.close()

    def with_token(self, token: str) -> Self:
        """This client over the same channel, sending ``token``; it owns nothing to close."""
        return type(self)(self.connection.with_token(token), self.timeout_s)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _call(
        self,
        method: Callable[..., _Response],
        request: Any,
        timeout_s: float | None = None,
        *,
        retry: bool = True,
    ) -> _Response:
        return self.connection.unary(method, request, timeout_s or self.timeout_s, retry=retry)

    def _stream(self, method: Callable[..., Any], request: Any, timeout_s: float | None) -> Iterator[Any]:
        """A server stream; ``timeout_s`` None means no deadline."""
        return self.connection.stream(method, request, timeout_s)
