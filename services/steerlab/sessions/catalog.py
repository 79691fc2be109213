"""Which dimensions a session may use: those registered in the vector registry."""

from __future__ import annotations

import threading
import time
from typing import Protocol

from steerlab.steering.datasets import Dimension, builtin_dimensions
from steerlab.steering.errors import UnavailableError


class DimensionCatalog(Protocol):
    def dimensions(self, refresh: bool = False) -> dict[str, Dimension]:
        """Every known dimension by name; ``refresh`` skips any cache."""
        ...

    def tenant_of(self, name: str) -> str:
        """The tenant a (known) dimension belongs to; "" for a shared one."""
        ...


class StaticCatalog:
    """A fixed set of dimensions (the built-in five by default): the embedded default and tests."""

    def __init__(self, dimensions: list[Dimension] | None = None) -> None:
        chosen = dimensions if dimensions is not None else builtin_dimensions()
        self._dimensions = {d.name: d for d in chosen}

    def dimensions(self, refresh: bool = False) -> dict[str, Dimension]:
        return dict(self._dimensions)

    def tenant_of(self, name: str) -> str:
        return ""


class RegistryCatalog:
    """The registry's dimensions, fetched over gRPC and cached for ``ttl_s`` seconds.

    A name missing from the cache triggers one fresh read (the manager asks with ``refresh``),
    so a dimension registered a moment ago is usable at once.
    """

    def __init__(self, target: str, ttl_s: float = 30.0, token: str = "") -> None:
        from steerlab_client import RegistryClient

        self._client = RegistryClient(target, timeout_s=10.0, token=token)
        self._target = target
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._cached: dict[str, Dimension] = {}
        self._tenants: dict[str, str] = {}
        self._fetched_at = float("-inf")

    def dimensions(self, refresh: bool = False) -> dict[str, Dimension]:
        from steerlab_client import ClientError

        with self._lock:
            if refresh or time.monotonic() - self._fetched_at > self._ttl_s:
                try:
                    listed = self._client.list_dimensions()
                except ClientError as exc:
                    raise UnavailableError(
                        f"cannot read dimensions from the registry at {self._target}: {exc}"
                    ) from exc
                self._cached = {
                    d.name: Dimension(d.name, d.negative_pole, d.positive_pole, d.description) for d in listed
                }
                self._tenants = {d.name: d.tenant for d in listed}
                self._fetched_at = time.monotonic()
            return dict(self._cached)

    def tenant_of(self, name: str) -> str:
        with self._lock:
            return self._tenants.get(name, "")

    def close(self) -> None:
        self._client.close()
