"""The one place for what the whole platform shares: default ports and addresses, the
production alias, and where caches live.

Every service's settings are read the same way, by :mod:`steerlab.serving.settings`: the
command-line flag, else its ``STEERLAB_*`` variable, else the default. This module imports
nothing of SteerLab's and no third-party package, so the core, the services and the command line
can all use it at no cost.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


class Ports(NamedTuple):
    """A service's default gRPC port and Prometheus ``/metrics`` port."""

    grpc: int
    metrics: int


DEFAULT_PORTS: dict[str, Ports] = {
    "up": Ports(50050, 9460),  # every service on one port: `steerlab up`
    "registry": Ports(50051, 9464),
    "sessions": Ports(50052, 9465),
    "inference": Ports(50053, 9466),
    "jobs": Ports(50054, 9467),
}


def default_address(service: str) -> str:
    """Where a client looks for ``service`` when told nothing: ``localhost`` on its default port."""
    return f"localhost:{DEFAULT_PORTS[service].grpc}"


# Who may call a server (--auth): anyone, holders of the shared token, or holders of an API key.
AUTH_MODES = ("none", "token", "keys")

# The flags (and settings) of a server that every serving command takes.
SERVER_FLAGS = (
    "host", "port", "metrics_port", "health_port", "auth", "tls_cert", "tls_key", "tls_client_ca"
)  # fmt: skip

# The alias the platform serves when a request names no version of a vector set.
PRODUCTION_ALIAS = "production"


def steerlab_home() -> Path:
    """Root of SteerLab's caches and embedded data: ``$STEERLAB_HOME`` or ``~/.cache/steerlab``."""
    # An empty variable counts as unset, as every STEERLAB_* setting does (else "" is the cwd).
    return Path(os.environ.get("STEERLAB_HOME") or Path.home() / ".cache" / "steerlab")


def platform_data_dir() -> Path:
    """Where ``steerlab up`` keeps its embedded database unless told otherwise."""
    return steerlab_home() / "platform"


def embedded_database_url(directory: Path) -> str:
    """The embedded SQLite database of a data directory."""
    return f"sqlite:///{directory / 'steerlab.db'}"
