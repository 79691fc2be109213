"""Request ids: the idempotency keys that every create or append call may carry.

A store that takes one records it beside what the call created, in the same transaction; a
second call with the same key (a client retrying after a lost reply) finds it and returns what
the first call made instead of doing it again.
"""

from steerlab.steering.errors import InvalidArgumentError

MAX_REQUEST_ID_LENGTH = 128


def check_request_id(request_id: str, max_length: int = MAX_REQUEST_ID_LENGTH) -> str:
    """``request_id`` if it is empty (none) or up to ``max_length`` printable characters; a
    clear error otherwise."""
    if len(request_id) > max_length or not request_id.isprintable():
        raise InvalidArgumentError(
            f"request_id must be at most {max_length} printable characters (got {len(request_id)} characters)"
        )
    return request_id
