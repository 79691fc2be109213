"""Bearer-token authentication: with a token set, every call must carry it in its metadata.

Clients send ``authorization: Bearer <token>`` (the SDK does, given ``token=``). Health checks and
reflection stay open, so that Kubernetes probes and ``grpcurl list`` work without the secret.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.")


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses calls without ``authorization: Bearer <token>`` with UNAUTHENTICATED."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.lstrip("/").startswith(OPEN_SERVICES):
            return handler
        if self._authorised(handler_call_details.invocation_metadata or ()):
            return handler
        return _refusing(handler)

    def _authorised(self, metadata: Any) -> bool:
        for key, value in metadata:
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
                return hmac.compare_digest(given, self._expected)
        return False


async def _refuse(_request: Any, context: grpc.aio.ServicerContext) -> Any:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token (authorization: Bearer ...)")


async def _refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
    await _refuse(request, context)
    yield  # pragma: no cover - abort raises first; this makes the function a generator


def _refusing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    options = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_refuse_stream, **options)
    return grpc.unary_unary_rpc_method_handler(_refuse, **options)
