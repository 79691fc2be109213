"""Opaque page tokens for keyset pagination: each names the last row of the page before."""

from __future__ import annotations

import base64
import binascii

from steerlab.steering.errors import InvalidArgumentError

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


def page_size(requested: int) -> int:
    """The page size to use: 0 means the default; more than the maximum is capped."""
    if requested < 0:
        raise InvalidArgumentError(f"page_size must not be negative, got {requested}")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_page_token(last_key: int) -> str:
    return base64.urlsafe_b64encode(f"after:{last_key}".encode()).decode()


def decode_page_token(token: str) -> int | None:
    """The key the previous page ended at; None for the first page."""
    if not token:
        return None
    try:
        prefix, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if prefix == "after" and value.isdigit() and int(value) < 2**63:
            return int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidArgumentError(f"invalid page_token {token!r}: pass back a next_page_token unchanged")
