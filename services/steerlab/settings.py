"""The one place for what the whole platform shares: default ports, the production alias,
where caches live, and reading ``STEERLAB_*`` variables.

Every service's settings resolve each value the same way: the command-line flag, else its
``STEERLAB_*`` variable, else the default here. This module imports nothing of SteerLab's, so the
core, the services and the command line can all use it at no cost.
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

# The alias the platform serves when a request names no version of a vector set.
PRODUCTION_ALIAS = "production"


def steerlab_home() -> Path:
    """Root of SteerLab's caches and embedded data: ``$STEERLAB_HOME`` or ``~/.cache/steerlab``."""
    return Path(os.environ.get("STEERLAB_HOME", Path.home() / ".cache" / "steerlab"))


def int_env(name: str, default: int) -> int:
    """``$name`` as an integer, ``default`` when unset or empty; a clear error when not a number."""
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def chosen(flag: str | None, variable: str, default: str) -> str:
    """A text setting: the flag when given, else ``$variable`` when set, else ``default``."""
    if flag is not None:
        return flag
    return os.environ.get(variable) or default
