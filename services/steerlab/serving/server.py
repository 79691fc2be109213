"""A grpc.aio server with what every SteerLab service needs: health checking, reflection,
explicit message size limits, Prometheus ``/metrics``, and error-to-status mapping."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from steerlab.settings import int_env
from steerlab.steering.errors import UnavailableError

from .auth import TokenInterceptor
from .metrics import ObservingInterceptor, RpcMetrics, short_service_name

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    """Where and how a service listens. Port 0 picks a free port; metrics_port None disables /metrics.

    With a ``token``, every call except health checks and reflection must carry it
    (``authorization: Bearer <token>``); see :mod:`steerlab.serving.auth`.
    """

    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int | None = 9464
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    token: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be within 0..65535, got {self.port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics port must be within 0..65535, got {self.metrics_port}")
        if self.max_message_bytes < 1024:
            raise ValueError(f"max message size must be at least 1024 bytes, got {self.max_message_bytes}")

    @classmethod
    def from_env(
        cls,
        service: str,
        default_port: int,
        default_metrics_port: int,
        host: str | None = None,
        port: int | None = None,
        metrics_port: int | None = None,
    ) -> ServerSettings:
        """Flags (the arguments) win over ``STEERLAB_<SERVICE>_HOST``, ``_PORT`` and
        ``_METRICS_PORT`` (``off`` disables /metrics), ``STEERLAB_MAX_MESSAGE_BYTES`` and
        ``STEERLAB_TOKEN``, which win over the defaults."""
        prefix = f"STEERLAB_{service.upper()}_"
        metrics_env = os.environ.get(prefix + "METRICS_PORT", "")
        if metrics_port is None and metrics_env != "off":
            metrics_port = int_env(prefix + "METRICS_PORT", default_metrics_port)
        return cls(
            host=host or os.environ.get(prefix + "HOST") or "127.0.0.1",
            port=port if port is not None else int_env(prefix + "PORT", default_port),
            metrics_port=metrics_port,
            max_message_bytes=int_env("STEERLAB_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES),
            token=os.environ.get("STEERLAB_TOKEN", ""),
        )


@dataclass(frozen=True)
class ServiceBinding:
    """One service to serve: its full proto name, its servicer, and the generated add function."""

    name: str
    servicer: Any
    register: Callable[[Any, grpc.aio.Server], None]


class GrpcServer:
    """Serves a set of services on one port. ``await start()``, then ``await stop()``.

    The grpc.aio server is created in ``start`` because it binds to the running event loop.
    """

    def __init__(
        self,
        services: Sequence[ServiceBinding],
        settings: ServerSettings,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.services = tuple(services)
        # Pass a registry to export a service's own metrics beside the per-method ones.
        self.metrics_registry = metrics_registry or CollectorRegistry()
        # Registered on first start, so that a server that is built but never started (its
        # services may be served by another, as in `steerlab up`) leaves the registry alone.
        self._metrics: dict[str, RpcMetrics] | None = None
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._metrics_http: Any = None
        self.port = 0
        self.metrics_port: int | None = None

    def _build(self) -> grpc.aio.Server:
        limit = self.settings.max_message_bytes
        if self._metrics is None:
            self._metrics = {
                s.name: RpcMetrics(short_service_name(s.name), self.metrics_registry) for s in self.services
            }
        interceptors: list[grpc.aio.ServerInterceptor] = [ObservingInterceptor(self._metrics)]
        if self.settings.token:
            interceptors.append(TokenInterceptor(self.settings.token))  # inside: refusals are counted
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

    async def _set_health(self, status: int) -> None:
        for name in ["", *(s.name for s in self.services)]:
            await self._health.set(name, status)

    async def start(self) -> None:
        """Listen, serve, and report SERVING; raises :class:`UnavailableError` if the port is taken."""
        server = self._server = self._build()
        address = f"{self.settings.host}:{self.settings.port}"
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise UnavailableError(f"cannot listen on {address}: {exc}") from exc
        await server.start()
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

    async def stop(self, grace_s: float = 5.0) -> None:
        """Report NOT_SERVING, let calls in flight finish (up to ``grace_s``), then stop."""
        if self._server is None:
            return
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._server.stop(grace_s)
        self._server = None
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
            self._metrics_http = None


async def run_until_signalled(server: GrpcServer, on_started: Callable[[], None] | None = None) -> None:
    """Start ``server`` and serve until SIGINT or SIGTERM, then stop gracefully."""
    await server.start()
    if on_started is not None:
        on_started()
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
    server: GrpcServer, name: str, details: str, foreground: Foreground | None = None
) -> None:
    """What ``steerlab <service> serve`` does: log, announce one line when ready, serve until signalled.

    With ``foreground``, gRPC runs on a second thread and ``foreground.run_forever()`` on this
    one; a signal stops the server gracefully first, then the foreground work.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = server.settings

    def announce() -> None:
        metrics = f"http://{settings.host}:{server.metrics_port}/metrics" if server.metrics_port else "off"
        print(
            f"steerlab {name} serving on {settings.host}:{server.port} ({details}; metrics {metrics})",
            flush=True,
        )

    if foreground is None:
        asyncio.run(run_until_signalled(server, on_started=announce))
        return
    _serve_beside(server, announce, foreground)


def _serve_beside(server: GrpcServer, announce: Callable[[], None], foreground: Foreground) -> None:
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failures: list[BaseException] = []

    async def serve() -> None:
        try:
            await server.start()
            announce()
            await stop.wait()
            log.info("stopping")
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
