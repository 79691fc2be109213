"""Identifiers the stores check: request ids, and the tenant and user names records belong to.

Request ids are the idempotency keys that every create or append call may carry.

A store that takes one records it beside what the call created, in the same transaction; a
second call with the same key (a client retrying after a lost reply) finds it and returns what
the first call made instead of doing it again.
"""

from steerlab.steering.errors import InvalidArgumentError

MAX_REQUEST_ID_LENGTH = 128
# A request that records several rows derives their ids from its own (":user:0", ":assistant").
MAX_PARENT_REQUEST_ID_LENGTH = MAX_REQUEST_ID_LENGTH - 16
MAX_ID_LENGTH = 200


def check_request_id(request_id: str, max_length: int = MAX_REQUEST_ID_LENGTH) -> str:
    """``request_id`` if it is empty (none) or up to ``max_length`` printable characters; a
    clear error otherwise."""
    if len(request_id) > max_length or not request_id.isprintable():
        raise InvalidArgumentError(
            f"request_id must be at most {max_length} printable characters (got {len(request_id)} characters)"
        )
    return request_id


def check_identifier(what: str, value: str) -> str:
    """A tenant, user or model name: 1 to ``MAX_ID_LENGTH`` printable characters."""
    if not value or len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise InvalidArgumentError(f"{what} must be 1..{MAX_ID_LENGTH} printable characters, got {value!r}")
    return value
