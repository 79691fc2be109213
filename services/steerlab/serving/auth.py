"""Who may call: a server's three authentication modes (``--auth``, ``STEERLAB_AUTH``).

- ``none``: every call is served (the embedded default, on a laptop);
- ``token``: every call must carry the one shared token (``STEERLAB_TOKEN``);
- ``keys``: every call must carry an API key (``steerlab keys create``). The call runs as the
  key's principal (tenant, user, role; see :mod:`steerlab.auth`), and a method that needs a
  higher role than the key's is refused with PERMISSION_DENIED.

Clients send ``authorization: Bearer <token or key>`` (the SDK does, given ``token=``). Health
checks and reflection stay open in every mode, so that Kubernetes probes and ``grpcurl list``
work without a secret.
"""

from __future__ import annotations

import abc
import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from steerlab.auth import Principal, bind_principal
from steerlab.auth.limits import KeyLimits
from steerlab.auth.store import KeyStore
from steerlab.steering.errors import UnauthenticatedError
from steerlab.storage import open_database

from .settings import ServerSettings

OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.")
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]]


def bearer(metadata: Any) -> str:
    """The credential of ``authorization: Bearer <credential>``; "" when there is none."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            return text.removeprefix("Bearer ") if text.startswith("Bearer ") else ""
    return ""


def _is_open(details: grpc.HandlerCallDetails) -> bool:
    return bool(details.method.lstrip("/").startswith(OPEN_SERVICES))


class _Gate(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Lets health checks and reflection through; every other call is the subclass's to admit."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or _is_open(handler_call_details):
            return handler
        return await self.admit(handler, handler_call_details)

    @abc.abstractmethod
    async def admit(
        self, handler: grpc.RpcMethodHandler, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        """``handler``, as it is or wrapped, or a handler that refuses the call."""


class TokenInterceptor(_Gate):
    """``token`` mode: refuses a call without ``authorization: Bearer <token>`` (UNAUTHENTICATED)."""

    def __init__(self, token: str) -> None:
        self._expected = token.encode()

    async def admit(
        self, handler: grpc.RpcMethodHandler, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        given = bearer(handler_call_details.invocation_metadata).encode()
        if given and hmac.compare_digest(given, self._expected):
            return handler
        return _refusing(
            handler, grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token (authorization: Bearer ...)"
        )


MAX_TENANT_LABELS = 100  # metrics label at most this many tenants by name, the rest "other"


class TenantMetrics:
    """What each tenant's keys use and how often they are limited (labelled by tenant, never key)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "steerlab_tenant_requests", "Calls made with API keys, by tenant", ["tenant"], registry=registry
        )
        self.tokens = Counter(
            "steerlab_tenant_generated_tokens",
            "Tokens generated for API keys, by tenant",
            ["tenant"],
            registry=registry,
        )
        self.limited = Counter(
            "steerlab_tenant_limited",
            "Calls refused by a per-key limit, by tenant and limit (requests or tokens)",
            ["tenant", "limit"],
            registry=registry,
        )
        self._named: set[str] = set()

    def tenant(self, tenant: str) -> str:
        """``tenant`` as a label value; bounded, so that no caller can grow the metrics."""
        if tenant not in self._named and len(self._named) < MAX_TENANT_LABELS:
            self._named.add(tenant)
        return tenant if tenant in self._named else "other"


class KeyChanges(Collector):
    """``steerlab_api_key_changes_total{tenant, change}``: keys created and revoked, read from the
    key table at each scrape. ``steerlab keys`` runs in its own process, so a counter kept in
    memory here would never see its changes; the table records every one of them."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "steerlab_api_key_changes",
            "API keys created and revoked (by any process, steerlab keys included), by tenant",
            labels=["tenant", "change"],
        )

    def describe(self) -> Iterator[Metric]:
        """The metric's name without reading the table (the registry asks when it is added)."""
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        try:
            counts = self.keys.change_counts()
        except Exception:  # a scrape must not fail because the database is briefly away
            logging.getLogger(__name__).warning("could not read the API key table", exc_info=True)
            return
        totals: dict[str, list[int]] = {}
        for index, (tenant, created, revoked) in enumerate(counts):
            label = tenant if index < MAX_TENANT_LABELS else "other"
            total = totals.setdefault(label, [0, 0])
            total[0] += created
            total[1] += revoked
        for tenant, (created, revoked) in totals.items():
            family.add_metric([tenant, "created"], created)
            family.add_metric([tenant, "revoked"], revoked)
        yield family


# A metered method: how many tokens one of its responses generated.
Meter = Callable[[Any], int]


class KeyInterceptor(_Gate):
    """``keys`` mode: checks the call's API key, the method's role and the key's limits, then
    runs the handler as the key's principal (charging a metered method's generated tokens)."""

    def __init__(
        self,
        keys: KeyStore,
        roles: Mapping[str, str],
        limits: KeyLimits,
        metered: Mapping[str, Meter],
        metrics: TenantMetrics,
    ) -> None:
        self.keys = keys
        self.roles = roles  # "/steerlab.v1.Service/Method" -> the least role that may call it
        self.limits = limits
        self.metered = metered  # "/steerlab.v1.Service/Method" -> tokens of a response
        self.metrics = metrics

    async def admit(
        self, handler: grpc.RpcMethodHandler, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        key = bearer(handler_call_details.invocation_metadata)
        if not key:
            return _refusing(
                handler, grpc.StatusCode.UNAUTHENTICATED, "no API key (authorization: Bearer slk_...)"
            )
        try:
            principal = await asyncio.to_thread(self.keys.authenticate, key)
        except UnauthenticatedError as exc:
            return _refusing(handler, grpc.StatusCode.UNAUTHENTICATED, str(exc))
        method = handler_call_details.method
        needed = self.roles.get(method, "user")
        if not principal.may(needed):
            message = f"{method.lstrip('/')} needs the {needed} role; this key has {principal.role}"
            return _refusing(handler, grpc.StatusCode.PERMISSION_DENIED, message)
        tenant = self.metrics.tenant(principal.tenant)
        self.metrics.requests.labels(tenant).inc()
        refusal = self._over_limit(principal, method, tenant)
        if refusal is not None:
            return refusal(handler)
        meter = self.metered.get(method)
        charge = None if meter is None else self._charger(principal, tenant, meter)
        return _as_principal(handler, principal, charge)

    def _over_limit(
        self, principal: Principal, method: str, tenant: str
    ) -> Callable[[grpc.RpcMethodHandler], grpc.RpcMethodHandler] | None:
        settings = self.limits.settings
        checks = [("requests", self.limits.request_wait_s, f"{settings.requests_per_s:g} requests/s")]
        if method in self.metered:
            budget = f"{settings.tokens_per_minute:g} generated tokens/minute"
            checks.append(("tokens", self.limits.generation_wait_s, budget))
        for limit, wait_s, described in checks:
            wait = wait_s(principal.key_id)
            if wait > 0:
                self.metrics.limited.labels(tenant, limit).inc()
                message = f"key {principal.key_id} is over its limit of {described}; retry in {wait:.1f} s"
                retry = (("retry-after-s", f"{wait:.1f}"),)
                return lambda h: _refusing(h, grpc.StatusCode.RESOURCE_EXHAUSTED, message, retry)
        return None

    def _charger(self, principal: Principal, tenant: str, meter: Meter) -> Callable[[Any], None]:
        def charge(response: Any) -> None:
            tokens = meter(response)
            if tokens:
                self.limits.charge_tokens(principal.key_id, tokens)
                self.metrics.tokens.labels(tenant).inc(tokens)

        return charge


def _options(handler: grpc.RpcMethodHandler) -> dict[str, Any]:
    return {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }


def _as_principal(
    handler: grpc.RpcMethodHandler, principal: Principal, charge: Callable[[Any], None] | None = None
) -> grpc.RpcMethodHandler:
    """``handler`` run as ``principal``: each call is its own asyncio task, so the principal
    bound at its start is that call's alone (and the threads it starts inherit it). ``charge``
    sees each response of a stream (to count what it generated)."""
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def serve_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            bind_principal(principal)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(serve_unary, **_options(handler))
    if handler.unary_stream is not None:
        stream = handler.unary_stream

        async def serve_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            bind_principal(principal)
            async for response in stream(request, context):
                if charge is not None:
                    charge(response)
                yield response

        return grpc.unary_stream_rpc_method_handler(serve_stream, **_options(handler))
    raise TypeError(f"SteerLab serves unary and server-streaming calls only, not {handler}")


def _refusing(
    handler: grpc.RpcMethodHandler,
    code: grpc.StatusCode,
    message: str,
    trailers: tuple[tuple[str, str], ...] = (),
) -> grpc.RpcMethodHandler:
    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message, trailing_metadata=trailers)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await refuse(request, context)
        yield  # pragma: no cover - abort raises first; this makes the function a generator

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, **_options(handler))
    return grpc.unary_unary_rpc_method_handler(refuse, **_options(handler))


def open_key_store(settings: ServerSettings, database_url: str) -> KeyStore | None:
    """The API keys in ``database_url`` when ``settings`` asks for ``--auth keys``; else None."""
    if settings.auth_mode != "keys":
        return None
    return KeyStore(open_database(database_url))
