"""Per-key limits: a request rate and a generated-token budget, each a token bucket.

A bucket holds up to ``capacity`` and refills at ``rate_per_s``; a request takes one from the
request bucket, and a generation may start while the token bucket is not empty and is charged
its completion tokens when it ends (so one long answer may overdraw it, and the next waits).
Buckets live in each replica's memory: with N replicas a key gets up to N times the rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class TokenBucket:
    rate_per_s: float
    capacity: float
    level: float
    updated: float

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate_per_s)
        self.updated = now

    def wait_s(self, now: float, needed: float) -> float:
        """Seconds until the bucket holds ``needed``; 0 if it does now."""
        self._refill(now)
        return 0.0 if self.level >= needed else (needed - self.level) / self.rate_per_s

    def take(self, now: float, amount: float) -> None:
        self._refill(now)
        self.level -= amount


@dataclass(frozen=True)
class LimitSettings:
    """0 means no limit."""

    requests_per_s: float = 0.0
    request_burst: float = 0.0  # 0: one second's worth (at least 1)
    tokens_per_minute: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.requests_per_s > 0 or self.tokens_per_minute > 0


class KeyLimits:
    """The buckets of every key seen by this replica."""

    def __init__(self, settings: LimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._requests: dict[str, TokenBucket] = {}
        self._tokens: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def _bucket(
        self, buckets: dict[str, TokenBucket], key_id: str, rate: float, capacity: float
    ) -> TokenBucket:
        if key_id not in buckets:
            buckets[key_id] = TokenBucket(rate, capacity, capacity, self._clock())
        return buckets[key_id]

    def request_wait_s(self, key_id: str) -> float:
        """Take one request from the key's bucket; or, when it is empty, how long to wait."""
        rate = self.settings.requests_per_s
        if rate <= 0:
            return 0.0
        with self._lock:
            burst = self.settings.request_burst or max(1.0, rate)
            bucket = self._bucket(self._requests, key_id, rate, burst)
            now = self._clock()
            wait = bucket.wait_s(now, 1.0)
            if wait == 0:
                bucket.take(now, 1.0)
            return wait

    def generation_wait_s(self, key_id: str) -> float:
        """0 while the key has tokens left to generate; else how long until it has one."""
        per_minute = self.settings.tokens_per_minute
        if per_minute <= 0:
            return 0.0
        with self._lock:
            bucket = self._bucket(self._tokens, key_id, per_minute / 60, per_minute)
            return bucket.wait_s(self._clock(), 1.0)

    def charge_tokens(self, key_id: str, tokens: int) -> None:
        per_minute = self.settings.tokens_per_minute
        if per_minute <= 0 or tokens <= 0:
            return
        with self._lock:
            self._bucket(self._tokens, key_id, per_minute / 60, per_minute).take(self._clock(), tokens)
