"""The principal of a call: who holds the key, in which tenant, with which role."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

from steerlab.steering.errors import InvalidArgumentError

# What every API key starts with: ``slk_<key id>_<secret>``.
KEY_PREFIX = "slk_"

# The tenant of the platform's own keys (the services' calls to each other).
SERVICE_TENANT = "steerlab"

# Each role may do what the roles before it may.
ROLES = ("user", "operator", "admin")


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidArgumentError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return role


def role_at_least(role: str, needed: str) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class Principal:
    """Who a call runs for. ``key_id`` is the key's public id; ``credential`` is the key the call
    carried, kept only to call other services on the caller's behalf (never shown or logged)."""

    key_id: str
    tenant: str
    user_id: str
    role: str
    credential: str = field(default="", repr=False, compare=False)

    @property
    def keyed(self) -> bool:
        """Whether the call came with an API key (``--auth keys``)."""
        return bool(self.key_id)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may(self, needed: str) -> bool:
        return role_at_least(self.role, needed)


# Without API keys (--auth none or token) every caller is trusted as before: an admin of every tenant.
TRUSTED = Principal(key_id="", tenant="", user_id="", role="admin")

_current: ContextVar[Principal] = ContextVar("steerlab_principal", default=TRUSTED)


def current_principal() -> Principal:
    """The principal of the call being served (``TRUSTED`` outside a keyed call)."""
    return _current.get()


def tenant_view() -> str | None:
    """The tenant whose own things (custom dimensions, jobs) the caller sees beside the shared
    ones; None: everything (an admin's key, or no API keys at all)."""
    principal = current_principal()
    return None if principal.is_admin else principal.tenant


def may_see(owner: str) -> bool:
    """Whether the caller sees a thing of tenant ``owner`` that may be shared (``""``): a custom
    dimension, say. Shared things and its own tenant's; an admin (or no keys) everything."""
    view = tenant_view()
    return view is None or owner in ("", view)


def bind_principal(principal: Principal) -> None:
    """Make ``principal`` the current one for the rest of this asyncio task (one served call)."""
    _current.set(principal)


@contextlib.contextmanager
def serving_as(principal: Principal) -> Iterator[None]:
    """Run the block as ``principal`` (tests, and work done on another's behalf)."""
    token = _current.set(principal)
    try:
        yield
    finally:
        _current.reset(token)
