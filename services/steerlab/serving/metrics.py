"""Per-method request counts and latencies, and the error-to-status mapping, as one interceptor.

Metric names follow ``steerlab_<service>_<thing>_<unit>``: for the registry,
``steerlab_registry_requests_total{method,code}`` and
``steerlab_registry_request_duration_seconds{method,code}``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from steerlab.auth import current_principal
from steerlab.auth.audit import audit, resource_of
from steerlab.steering.errors import InvalidArgumentError, SteerLabError

from .status import status_code

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def short_service_name(full_name: str) -> str:
    """``steerlab.v1.RegistryService`` -> ``registry``; ``steerlab.v1.JobService`` -> ``job``."""
    base = full_name.rsplit(".", 1)[-1].removesuffix("Service")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", base).lower()


class RpcMetrics:
    """The request counter and latency histogram of one service."""

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            f"steerlab_{service}_requests",
            f"gRPC requests handled by the {service} service, by method and status code",
            ["method", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            f"steerlab_{service}_request_duration_seconds",
            f"Time to handle a {service} request, by method and status code",
            ["method", "code"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

        self.audited = Counter(
            f"steerlab_{service}_audit_events",
            f"Changes made through the {service} service (each also an audit log line), by outcome",
            ["method", "outcome"],
            registry=registry,
        )

    def observe(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(method, code).inc()
        self.latency.labels(method, code).observe(seconds)


class ObservingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Measures every call of the given services and turns SteerLab errors into statuses.

    Handlers raise :class:`~steerlab.steering.errors.SteerLabError` subclasses; this is the one
    place that maps them to status codes. Anything else is a bug: logged, and reported as
    INTERNAL without internals.
    """

    def __init__(self, metrics: dict[str, RpcMetrics], audited: Mapping[str, frozenset[str]]) -> None:
        self._metrics = metrics  # by full service name
        self._audited = audited  # the methods that change something, by full service name

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        service, _, method = handler_call_details.method.lstrip("/").partition("/")
        metrics = self._metrics.get(service)
        if handler is None or metrics is None:
            return handler
        audited = method in self._audited.get(service, frozenset())
        deserializer = _tolerant(handler.request_deserializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(metrics, method, handler.unary_unary, audited),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(metrics, method, handler.unary_stream),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _unary(self, metrics: RpcMetrics, method: str, behaviour: Any, audited: bool) -> Any:
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with _observed(metrics, method, context, request if audited else None):
                return await behaviour(_decoded(request), context)

        return unary

    def _streaming(self, metrics: RpcMetrics, method: str, behaviour: Any) -> Any:
        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with _observed(metrics, method, context):
                async for response in behaviour(_decoded(request), context):
                    yield response

        return streaming


# Errors quote what the caller sent (``unknown dimension 'spice'``). In a status, a quoted value
# keeps its first 100 characters and the whole message at most 600: an error about a huge input
# must still reach the client, whose limit on a status is a few kilobytes.
MAX_QUOTED = 100
MAX_STATUS_MESSAGE = 600
_LONG_QUOTE = re.compile(rf"""(['"])([^'"]{{{MAX_QUOTED}}})[^'"]{{3,}}\1""")


def bounded(message: str) -> str:
    """``message`` as a status carries it: long quoted values and long messages cut."""
    message = _LONG_QUOTE.sub(r"\1\2...\1", message)
    if len(message) <= MAX_STATUS_MESSAGE:
        return message
    return f"{message[: MAX_STATUS_MESSAGE - 20]}... ({len(message)} characters)"


@dataclass(frozen=True)
class _Undecodable:
    """A request whose bytes are not a valid message of the method's type."""

    message_type: str
    reason: str


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserialize``, returning :class:`_Undecodable` instead of raising (which gRPC would
    report as UNKNOWN), so that the call is refused as INVALID_ARGUMENT."""
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # protobuf's DecodeError, or invalid UTF-8 in a string field
            owner = getattr(deserialize, "__self__", None)
            return _Undecodable(getattr(owner, "__name__", "request"), str(exc)[:100])

    return parse


def _decoded(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise InvalidArgumentError(
            f"the request's bytes are not a valid {request.message_type} message ({request.reason})"
        )
    return request


@asynccontextmanager
async def _observed(
    metrics: RpcMetrics, method: str, context: grpc.aio.ServicerContext, audited: Any = None
) -> AsyncIterator[None]:
    """Time the call and count it by status; with ``audited`` (the request of a call that
    changes something), also write its audit line, as the principal the call ran as."""
    started = time.perf_counter()
    code = "OK"
    try:
        yield
    except SteerLabError as exc:
        status = status_code(exc)
        code = str(status.name)
        await context.abort(status, bounded(str(exc)))
    except grpc.aio.AbortError:
        code = _context_code(context, default="UNKNOWN")
        raise
    except asyncio.CancelledError:
        code = "CANCELLED"
        raise
    except Exception:
        code = "INTERNAL"
        log.exception("unhandled error in %s", method)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see the server log")
    finally:
        metrics.observe(method, code, time.perf_counter() - started)
        if audited is not None:
            audit(current_principal(), method, resource_of(audited), code)
            metrics.audited.labels(method, code).inc()


def _context_code(context: grpc.aio.ServicerContext, default: str) -> str:
    code = context.code()
    return str(code.name) if isinstance(code, grpc.StatusCode) else default
