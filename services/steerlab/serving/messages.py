"""Conversions every servicer needs between Python values and protobuf well-known types."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from steerlab.steering.errors import InvalidArgumentError

_Choice = TypeVar("_Choice")


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def enum_choice(choices: Mapping[Any, _Choice], value: int, what: str) -> _Choice:
    """What an enum field's ``value`` stands for; INVALID_ARGUMENT naming the field and the
    choices when it is none of them (proto3 keeps unknown numbers, such as 99, as they came)."""
    if value not in choices:
        named = ", ".join(dict.fromkeys(map(str, choices.values())))
        raise InvalidArgumentError(f"{what} must be one of {named}, got {value}")
    return choices[value]
