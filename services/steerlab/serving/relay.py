"""For services that call other SteerLab services through the client SDK: a failed call comes
back as the same kind of error it was on the other side. Kept apart from the server, which does
not depend on the SDK."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from steerlab_client import ClientError

from .status import error_for_status


@contextmanager
def relayed(source: str = "") -> Iterator[None]:
    """Inside, a failed call to another SteerLab service (a ``ClientError``) is re-raised as
    the error of the kind its status names, its message prefixed with ``source``."""
    try:
        yield
    except ClientError as exc:
        raise error_for_status(exc.code, f"{source}: {exc.message}" if source else exc.message) from exc
