"""Who is calling: API keys (stored hashed), the principal a key stands for, and its role.

- :mod:`.principal`: :class:`Principal`, the roles (``user`` < ``operator`` < ``admin``) and the
  principal of the call being served (a context variable the serving edge sets);
- :mod:`.store`: :class:`~.store.KeyStore`, keys in PostgreSQL or SQLite, never in clear
  (imported from there, so that the command line need not load the database drivers).

Nothing here knows gRPC: the serving edge (:mod:`steerlab.serving.auth`) reads the key from a
call and refuses it; the services ask :func:`current_principal` what the caller may see.
"""

from .principal import (
    ROLES,
    TRUSTED,
    Principal,
    bind_principal,
    current_principal,
    may_see,
    role_at_least,
    serving_as,
    tenant_view,
)

__all__ = [
    "ROLES",
    "TRUSTED",
    "Principal",
    "bind_principal",
    "current_principal",
    "may_see",
    "role_at_least",
    "serving_as",
    "tenant_view",
]
