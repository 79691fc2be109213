"""A grpc.aio server with what every SteerLab service needs: health checking, reflection,
explicit message size limits, Prometheus ``/metrics``, and error-to-status mapping."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from steerlab.auth.limits import KeyLimits
from steerlab.auth.store import KeyStore
from steerlab.steering.errors import UnavailableError

from .auth import KeyChanges, KeyInterceptor, Meter, TenantMetrics, TokenInterceptor
from .metrics import ObservingInterceptor, RpcMetrics, short_service_name
from .settings import ServerSettings

log = logging.getLogger(__name__)
_Value = TypeVar("_Value")


@dataclass(frozen=True)
class ServiceBinding:
    """One service to serve: its full proto name, its servicer, and the generated add function."""

    name: str
    servicer: Any
    register: Callable[[Any, grpc.aio.Server], None]
    # Methods that need more than the user role, by name: {"SetAlias": "operator"}.
    roles: Mapping[str, str] = field(default_factory=dict)
    # Methods that change something: each call is written to the audit log and counted.
    audited: frozenset[str] = frozenset()
    # Methods that generate tokens, charged to the key's budget: {"Generate": tokens_of_response}.
    metered: Mapping[str, Meter] = field(default_factory=dict)


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' PEM files; None for plaintext."""
    if not settings.tls_cert:
        return None
    try:
        chain, key = Path(settings.tls_cert).read_bytes(), Path(settings.tls_key).read_bytes()
        client_ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None
    except OSError as exc:
        raise UnavailableError(f"cannot read a TLS file: {exc}") from exc
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


class GrpcServer:
    """Serves a set of services on one port. ``await start()``, then ``await stop()``.

    The grpc.aio server is created in ``start`` because it binds to the running event loop.
    """

    def __init__(
        self,
        services: Sequence[ServiceBinding],
        settings: ServerSettings,
        metrics_registry: CollectorRegistry | None = None,
        keys: KeyStore | None = None,
    ) -> None:
        if settings.auth_mode == "keys" and keys is None:
            raise ValueError("--auth keys needs the database that holds the API keys")
        self.settings = settings
        self.services = tuple(services)
        self.keys = keys
        self.limits = KeyLimits(settings.limits)
        self._tenant_metrics: TenantMetrics | None = None
        # Pass a registry to export a service's own metrics beside the per-method ones.
        self.metrics_registry = metrics_registry or CollectorRegistry()
        # Registered on first start, so that a server that is built but never started (its
        # services may be served by another, as in `steerlab up`) leaves the registry alone.
        self._metrics: dict[str, RpcMetrics] | None = None
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._metrics_http: Any = None
        self._health_server: grpc.aio.Server | None = None
        self.port = 0
        self.metrics_port: int | None = None
        self.health_port: int | None = None

    def _build(self) -> grpc.aio.Server:
        limit = self.settings.max_message_bytes
        if self._metrics is None:
            self._metrics = {
                s.name: RpcMetrics(short_service_name(s.name), self.metrics_registry) for s in self.services
            }
        audited = {s.name: s.audited for s in self.services}
        interceptors: list[grpc.aio.ServerInterceptor] = [ObservingInterceptor(self._metrics, audited)]
        # Inside the observer, so that refusals are counted.
        if self.settings.auth_mode == "token":
            interceptors.append(TokenInterceptor(self.settings.token))
        elif self.settings.auth_mode == "keys" and self.keys is not None:
            if self._tenant_metrics is None:
                self._tenant_metrics = TenantMetrics(self.metrics_registry)
                self.metrics_registry.register(KeyChanges(self.keys))
            roles, metered = self._by_method(lambda s: s.roles), self._by_method(lambda s: s.metered)
            interceptors.append(KeyInterceptor(self.keys, roles, self.limits, metered, self._tenant_metrics))
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
        )
        for service in self.services:
            service.register(service.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = [s.name for s in self.services]
        reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        return server

    def _by_method(self, table: Callable[[ServiceBinding], Mapping[str, _Value]]) -> dict[str, _Value]:
        """One per-service table of the bindings (roles, meters) keyed by full method name."""
        return {
            f"/{service.name}/{method}": value
            for service in self.services
            for method, value in table(service).items()
        }

    async def _set_health(self, status: int) -> None:
        for name in ["", *(s.name for s in self.services)]:
            await self._health.set(name, status)

    async def start(self) -> None:
        """Listen, serve, and report SERVING; raises :class:`UnavailableError` if the port is taken."""
        server = self._server = self._build()
        address = f"{self.settings.host}:{self.settings.port}"
        try:
            credentials = server_credentials(self.settings)
            if credentials is None:
                self.port = server.add_insecure_port(address)
            else:
                self.port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise UnavailableError(f"cannot listen on {address}: {exc}") from exc
        await server.start()
        if self.settings.health_port is not None:
            await self._start_health_port(self.settings.health_port)
        if self.settings.metrics_port is not None:
            try:
                http, _thread = start_http_server(
                    self.settings.metrics_port, addr=self.settings.host, registry=self.metrics_registry
                )
            except OSError as exc:
                await server.stop(None)
                raise UnavailableError(
                    f"cannot serve metrics on {self.settings.host}:{self.settings.metrics_port}: {exc}"
                ) from exc
            self._metrics_http = http
            self.metrics_port = int(http.server_port)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)

    async def _start_health_port(self, port: int) -> None:
        health_server = self._health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, health_server)
        address = f"{self.settings.host}:{port}"
        try:
            self.health_port = health_server.add_insecure_port(address)
        except RuntimeError as exc:
            raise UnavailableError(f"cannot serve health checks on {address}: {exc}") from exc
        await health_server.start()

    async def prepare(self, work: Callable[[], None]) -> None:
        """Run blocking ``work`` that needs this server listening (e.g. jobs that call its own
        services) on a worker thread, reporting NOT_SERVING to health checks until it is done."""
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await asyncio.to_thread(work)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Report NOT_SERVING, let calls in flight finish (up to ``grace_s``), then stop."""
        if self._server is None:
            return
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._server.stop(grace_s)
        self._server = None
        if self._health_server is not None:
            await self._health_server.stop(None)
            self._health_server = None
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
            self._metrics_http = None


async def run_until_signalled(
    server: GrpcServer, on_started: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Start ``server`` and serve until SIGINT or SIGTERM, then stop gracefully."""
    await server.start()
    if on_started is not None:
        try:
            await on_started()
        except BaseException:
            await server.stop()
            raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("stopping")
    await server.stop()


class Foreground(Protocol):
    """Work that must own the main thread (the inference engine): runs until stopped."""

    def run_forever(self) -> None: ...
    def stop(self) -> None: ...


def serve_from_command_line(
    server: GrpcServer,
    name: str,
    details: str,
    foreground: Foreground | None = None,
    prepare: Callable[[], None] | None = None,
) -> None:
    """What ``steerlab <service> serve`` does: log, announce one line when ready, serve until signalled.

    With ``foreground``, gRPC runs on a second thread and ``foreground.run_forever()`` on this
    one; a signal stops the server gracefully first, then the foreground work. ``prepare`` runs
    once the port listens and before the announcement (see :meth:`GrpcServer.prepare`).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ready = announce_when_ready(server, name, details, prepare)
    if foreground is None:
        asyncio.run(run_until_signalled(server, on_started=ready))
        return
    _serve_beside(server, ready, foreground)


def announce_when_ready(
    server: GrpcServer, name: str, details: str, prepare: Callable[[], None] | None
) -> Callable[[], Awaitable[None]]:
    """What to do once the port listens: ``prepare``, then print the one line that says ready."""
    settings = server.settings

    async def ready() -> None:
        if prepare is not None:
            await server.prepare(prepare)
        metrics = f"http://{settings.host}:{server.metrics_port}/metrics" if server.metrics_port else "off"
        print(
            f"steerlab {name} serving on {settings.host}:{server.port} ({details}; metrics {metrics})",
            flush=True,
        )

    return ready


def _serve_beside(server: GrpcServer, ready: Callable[[], Awaitable[None]], foreground: Foreground) -> None:
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failures: list[BaseException] = []

    async def serve() -> None:
        try:
            await server.start()
            try:
                await ready()
                await stop.wait()
                log.info("stopping")
            finally:
                await server.stop()
        except BaseException as exc:
            failures.append(exc)
        finally:
            foreground.stop()

    def request_stop(_signum: int, _frame: object) -> None:
        loop.call_soon_threadsafe(stop.set)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), name="grpc", daemon=True)
    thread.start()
    foreground.run_forever()
    thread.join()
    loop.close()
    if failures:
        raise failures[0]
