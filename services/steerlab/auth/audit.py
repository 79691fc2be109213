"""The audit trail: one structured line per change (create, update, delete, alias move, key).

Each line is JSON on the ``steerlab.audit`` logger: the principal's key id (never the key),
tenant and user, the method, the resource it named, and the outcome (a status name).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .principal import Principal

audit_log = logging.getLogger("steerlab.audit")

# The request fields that name what a call changes, in the order a line lists them.
RESOURCE_FIELDS = ("session_id", "job_id", "dimension", "version", "alias", "tenant", "user_id", "key_id")


def resource_of(request: Any) -> str:
    """``dimension=cost alias=production version=3``: the identifying fields a request sets."""
    parts = []
    for name in RESOURCE_FIELDS:
        value = getattr(request, name, None)
        if value not in (None, "", 0):
            parts.append(f"{name}={value}")
    return " ".join(parts)


def audit(principal: Principal, method: str, resource: str, outcome: str) -> None:
    """Write one audit line."""
    audit_log.info(
        json.dumps(
            {
                "audit": method,
                "principal": principal.key_id or "-",
                "tenant": principal.tenant,
                "user": principal.user_id,
                "role": principal.role,
                "resource": resource,
                "outcome": outcome,
            },
            sort_keys=True,
        )
    )
