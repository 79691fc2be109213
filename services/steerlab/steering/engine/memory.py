"""Handing memory the engine has freed back to the operating system.

glibc's malloc keeps what a process frees for its own reuse, in one heap per thread that ever
allocated (gRPC's and torch's threads each get theirs). A serving process whose batches keep
changing shape (rows of every length joining and leaving, KV caches growing a token at a time)
leaves free holes in each heap that later, differently sized requests cannot always fill, so its
resident memory climbs toward the sum of every heap's high-water mark and stays there.
``malloc_trim(0)`` returns the free pages of every heap. It takes milliseconds, so the engine
calls it between steps at most once per ``TRIM_INTERVAL_S``. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

TRIM_INTERVAL_S = 30.0


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim this way
        return None
    return trim


class MemoryTrimmer:
    """Calls ``malloc_trim(0)`` when asked, at most once per ``interval_s``."""

    def __init__(self, interval_s: float = TRIM_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._trim = _malloc_trim()
        self._last = time.monotonic()

    @property
    def available(self) -> bool:
        return self._trim is not None

    def maybe_trim(self) -> bool:
        """Trim if the interval has passed; True if it did."""
        now = time.monotonic()
        if self._trim is None or now - self._last < self.interval_s:
            return False
        self._last = now
        self._trim(0)
        return True
