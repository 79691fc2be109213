"""Resolve each request's dimensions to registered vector set versions, cached as ready-to-add tensors.

A dimension without a pin resolves through the alias ``production``, or the latest version
when it has no such alias. Which version an alias (or "latest") names is re-read after
``resolve_ttl_s``, so moving an alias reaches new requests within seconds; a version's
tensors never change, so they are kept until evicted. A request holds the prepared tensors
it resolved, so a request in flight keeps its version whatever happens to the alias.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from steerlab.auth import may_see, tenant_view
from steerlab.serving.relay import relayed
from steerlab.settings import PRODUCTION_ALIAS
from steerlab.steering.batching import PreparedVectorSet
from steerlab.steering.catalog import describe_model
from steerlab.steering.errors import FailedPreconditionError, NotFoundError
from steerlab.steering.models import ModelFingerprint
from steerlab.steering.vectorset import VectorSet

if TYPE_CHECKING:
    from steerlab_client import RegistryClient


@dataclass(frozen=True)
class Pin:
    """A version number, an alias, or neither (the default: "production", else the latest)."""

    version: int | None = None
    alias: str | None = None

    def describe(self) -> str:
        if self.version is not None:
            return f"version {self.version}"
        return f"alias {self.alias!r}" if self.alias else "the default version"


class VectorSource(Protocol):
    """Where registered vector sets come from (the registry service; a fake in tests)."""

    def version_of(self, dimension: str, model_digest: str, version: int | None, alias: str | None) -> int:
        """The version a pin names (raises NotFoundError for unknown names)."""
        ...

    def fetch(self, dimension: str, model_digest: str, version: int) -> VectorSet: ...

    def models_with(self, dimension: str) -> dict[str, str]:
        """digest -> model name of every model with vector sets of ``dimension``."""
        ...

    def tenant_of(self, dimension: str) -> str | None:
        """The tenant a dimension belongs to ("" shared); None for an unknown one."""
        ...


class RegistrySource:
    """Reads a registry service over gRPC."""

    def __init__(self, client: RegistryClient, ttl_s: float = 2.0) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._tenants: dict[str, str] = {}
        self._tenants_read_at = float("-inf")
        self._tenants_lock = threading.Lock()

    def tenant_of(self, dimension: str) -> str | None:
        """From the registry's dimensions, read again when older than ``ttl_s`` or unknown."""
        with self._tenants_lock:
            stale = time.monotonic() - self._tenants_read_at > self.ttl_s
            if stale or dimension not in self._tenants:
                with relayed():
                    self._tenants = {d.name: d.tenant for d in self.client.list_dimensions()}
                self._tenants_read_at = time.monotonic()
            return self._tenants.get(dimension)

    def version_of(self, dimension: str, model_digest: str, version: int | None, alias: str | None) -> int:
        return int(self._get(dimension, model_digest, version, alias, with_file=False).version)

    def fetch(self, dimension: str, model_digest: str, version: int) -> VectorSet:
        found = self._get(dimension, model_digest, version, None, with_file=True)
        return VectorSet.from_bytes(found.file, source=f"registry {dimension} v{version}")

    def models_with(self, dimension: str) -> dict[str, str]:
        with relayed():
            return {
                vs.model.weights_digest: vs.model_name
                for vs in self.client.list_vector_sets(dimension=dimension)
            }

    def close(self) -> None:
        self.client.close()

    def _get(self, dimension: str, digest: str, version: int | None, alias: str | None, with_file: bool):  # type: ignore[no-untyped-def]
        with relayed():
            return self.client.get(dimension, version=version, alias=alias, model=digest, with_file=with_file)


class SteeringCacheMetrics(Protocol):
    def cache_hit(self) -> None: ...
    def cache_miss(self) -> None: ...


class VectorSetCache:
    """Prepared vector sets for one loaded model, by (dimension, version), least recently used out."""

    def __init__(
        self,
        source: VectorSource,
        fingerprint: ModelFingerprint,
        device: torch.device,
        dtype: torch.dtype,
        *,
        resolve_ttl_s: float = 2.0,
        capacity: int = 256,
        metrics: SteeringCacheMetrics | None = None,
    ) -> None:
        self.source = source
        self.fingerprint = fingerprint
        self.device, self.dtype = device, dtype
        self.resolve_ttl_s = resolve_ttl_s
        self.capacity = capacity
        self.metrics = metrics
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, Pin], tuple[int, float]] = {}
        self._prepared: OrderedDict[tuple[str, int], PreparedVectorSet] = OrderedDict()

    def resolve(self, dimension: str, pin: Pin = Pin()) -> PreparedVectorSet:
        """The prepared tensors ``pin`` names for ``dimension`` on this model."""
        version = self._version(dimension, pin)
        key = (dimension, version)
        with self._lock:
            prepared = self._prepared.get(key)
            if prepared is not None:
                self._prepared.move_to_end(key)
        if prepared is not None:
            self._count(hit=True)
            return prepared
        self._count(hit=False)
        vector_set = self.source.fetch(dimension, self.fingerprint.weights_digest, version)
        vector_set.check_model(self.fingerprint)
        prepared = PreparedVectorSet.prepare(vector_set, version, self.device, self.dtype)
        with self._lock:
            self._prepared[key] = prepared
            while len(self._prepared) > self.capacity:
                self._prepared.popitem(last=False)
        return prepared

    def resolve_all(
        self, strengths: Mapping[str, float], pins: Mapping[str, Pin]
    ) -> list[tuple[PreparedVectorSet, float]]:
        """Every dimension of a request, sorted by name so the fold adds in a fixed order."""
        unknown = sorted(set(pins) - set(strengths))
        if unknown:
            raise NotFoundError(f"pins for dimensions without a strength: {', '.join(unknown)}")
        if tenant_view() is not None:  # a key's caller: another tenant's dimension is unknown here
            for name in sorted(strengths):
                owner = self.source.tenant_of(name)
                if owner is None or not may_see(owner):
                    raise NotFoundError(f"unknown dimension {name!r}")
        return [(self.resolve(name, pins.get(name, Pin())), strengths[name]) for name in sorted(strengths)]

    def _version(self, dimension: str, pin: Pin) -> int:
        key = (dimension, pin)
        now = time.monotonic()
        with self._lock:
            cached = self._versions.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        version = self._look_up(dimension, pin)
        with self._lock:
            self._versions[key] = (version, now + self.resolve_ttl_s)
        return version

    def _look_up(self, dimension: str, pin: Pin) -> int:
        digest = self.fingerprint.weights_digest
        try:
            if pin.version is not None or pin.alias:
                return self.source.version_of(dimension, digest, pin.version, pin.alias)
            try:
                return self.source.version_of(dimension, digest, None, PRODUCTION_ALIAS)
            except NotFoundError:
                return self.source.version_of(dimension, digest, None, None)
        except NotFoundError as exc:
            self._refuse_other_models(dimension)
            raise NotFoundError(f"{dimension!r}: {exc}") from exc

    def _refuse_other_models(self, dimension: str) -> None:
        """FAILED_PRECONDITION when the dimension's vector sets were all made for other models."""
        models = self.source.models_with(dimension)
        if models and self.fingerprint.weights_digest not in models:
            others = "; ".join(describe_model(name, digest) for digest, name in sorted(models.items()))
            raise FailedPreconditionError(
                f"the vector sets of {dimension!r} were made for another model ({others}); this server "
                f"runs {describe_model('', self.fingerprint.weights_digest)}: extract {dimension!r} for it"
            )

    def _count(self, hit: bool) -> None:
        if self.metrics is not None:
            if hit:
                self.metrics.cache_hit()
            else:
                self.metrics.cache_miss()
