"""Helpers for the service tests: synthetic vector sets, databases, and servers in threads."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import torch

from steerlab.registry.server import RegistrySettings, build_registry_server
from steerlab.registry.store import RegistryStore
from steerlab.serving import GrpcServer, ServerSettings
from steerlab.steering import Dimension, LayerScore, ModelFingerprint, VectorSet
from steerlab.steering.datasets import builtin_dataset
from steerlab.storage import open_database

ADMIN_URL = os.environ.get("STEERLAB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DIGEST_A = "a1" * 32
DIGEST_B = "b2" * 32


def make_vector_set(
    dimension: str | Dimension = "cost",
    seed: int = 0,
    digest: str = DIGEST_A,
    model_name: str = "tiny-a",
    layers: int = 4,
    hidden: int = 8,
    model: ModelFingerprint | None = None,
    selected_layers: tuple[int, ...] = (1, 2),
    alpha_max: float | None = None,
) -> VectorSet:
    """A valid vector set with random unit directions; a name means a built-in dimension.

    Without ``model`` it belongs to a made-up model of ``layers`` x ``hidden``; with one
    (e.g. ``lm.fingerprint``) it can steer that model.
    """
    if model is not None:
        layers, hidden, digest = model.num_layers, model.hidden_size, model.weights_digest
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(layers, hidden, generator=generator)
    return VectorSet(
        dimension=builtin_dataset(dimension).dimension if isinstance(dimension, str) else dimension,
        directions=directions / directions.norm(dim=-1, keepdim=True),
        selected_layers=selected_layers,
        layer_scores=tuple(LayerScore(i, 0.9, 0.95) for i in range(layers)),
        alpha_max=0.5 + seed if alpha_max is None else alpha_max,
        site="norm",
        method="logistic",
        parameters={"num_tokens": 32, "seed": seed},
        dataset_hash="f" * 64,
        model=model or ModelFingerprint("llama", layers, hidden, 100, digest),
        library_version="0.1.0",
        created_at="2026-11-27T00:00:00+00:00",
        model_name=model_name,
    )


def postgres_available() -> str | None:
    """None if the test PostgreSQL answers, else why not."""
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.OperationalError as exc:
        return f"PostgreSQL at {ADMIN_URL} is not reachable: {exc}"


def require_postgres() -> None:
    """Skip without PostgreSQL, except under CI=true, where its absence fails the test."""
    reason = postgres_available()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (CI=true: scripts/test.sh should have started it)")
    pytest.skip(reason)


def require_redis() -> None:
    """Skip without Redis on 127.0.0.1:6379, except under CI=true, where its absence fails the test."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=3) as connection:
            connection.sendall(b"PING\r\n")
            if connection.recv(16).startswith(b"+PONG"):
                return
        reason = "Redis on 127.0.0.1:6379 did not answer PING"
    except OSError as exc:
        reason = f"Redis on 127.0.0.1:6379 is not reachable: {exc}"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (CI=true: scripts/test.sh should have started it)")
    pytest.skip(reason)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """Create an empty database for one test and drop it afterwards; yields its URL."""
    require_postgres()
    name = f"steerlab_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def open_store(url: str) -> RegistryStore:
    return RegistryStore(open_database(url))


class ServerThread:
    """A server on its own event loop in a background thread, on a real socket.

    ``ServerThread(url)`` runs the registry; pass ``server`` (and what to close) for another.
    """

    def __init__(
        self,
        database_url: str = "",
        max_message_bytes: int = 64 * 1024 * 1024,
        server: GrpcServer | None = None,
        closing: Callable[[], None] | None = None,
    ) -> None:
        if server is None:
            settings = RegistrySettings(
                database_url=database_url,
                server=ServerSettings(port=0, metrics_port=0, max_message_bytes=max_message_bytes),
            )
            server, self.store = build_registry_server(settings)
            closing = self.store.close
        self.server = server
        self._closing = closing
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout=30)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.server.metrics_port}/metrics"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(grace_s=1), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
        if self._closing is not None:
            self._closing()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServiceProcess:
    """`steerlab <service> serve` in a child process, started and stopped as an operator would."""

    def __init__(self, service: str, database_url: str, home: Path, port: int, *extra: str) -> None:
        """``database_url`` "" for a service that keeps none (inference)."""
        env = {**os.environ, "STEERLAB_HOME": str(home)}
        database = ["--database-url", database_url] if database_url else []
        command = [*database, "--port", str(port), "--metrics-port", "0", *extra]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "steerlab.cli", service, "serve", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self.banner = self.process.stdout.readline()
        if "serving on" not in self.banner:
            self.process.kill()
            raise AssertionError(f"{service} did not start: {self.banner}{self.process.stderr.read()}")
        self.target = f"127.0.0.1:{port}"
        metrics = re.search(r"metrics (http://\S+/metrics)", self.banner)
        self.metrics_url = metrics[1] if metrics else ""

    def stop(self) -> int:
        """SIGTERM, as Kubernetes sends; returns the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


class PlatformProcess:
    """`steerlab up` in a child process on free ports; ``startup`` holds what it printed first."""

    READY = re.compile(r"serving on (?P<address>\S+) .*metrics (?P<metrics>http://\S+/metrics)")

    def __init__(
        self, model: str, data_dir: Path, home: Path, token: str = "", timeout_s: float = 600
    ) -> None:
        env = {**os.environ, "STEERLAB_HOME": str(home), "STEERLAB_TOKEN": token, "PYTHONUNBUFFERED": "1"}
        env.pop("STEERLAB_DATABASE_URL", None)
        command = ["up", "--model", model, "--port", "0", "--metrics-port", "0", "--data-dir", str(data_dir)]
        self.log = (data_dir.parent / f"{data_dir.name}-stderr.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "steerlab.cli", *command],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )
        self.startup: list[str] = []
        ready = self._read_until_ready(timeout_s)
        self.address, self.metrics_url = ready["address"], ready["metrics"]

    def _read_until_ready(self, timeout_s: float) -> re.Match[str]:
        assert self.process.stdout is not None
        timer = threading.Timer(timeout_s, self.process.kill)
        timer.start()
        try:
            for line in self.process.stdout:
                self.startup.append(line.rstrip())
                ready = self.READY.search(line)
                if ready:
                    return ready
        finally:
            timer.cancel()
        self.process.wait()
        errors = Path(self.log.name).read_text()[-3000:]
        raise AssertionError("steerlab up did not start:\n" + "\n".join(self.startup) + "\n" + errors)

    def stop(self) -> int:
        """SIGTERM, as Kubernetes sends; returns the exit status."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        finally:
            self.log.close()
