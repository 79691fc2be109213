"""Property-based fuzzing of SteerLab's gRPC API: requests for every RPC, drawn by Hypothesis from
the protobuf descriptors, sent as bytes over a real socket, and the tally of what came back.

- :func:`all_rpcs` reads every method of every service from ``steerlab_api.v1.*_pb2``, so a new
  RPC is fuzzed with no change here.
- :func:`requests` draws a request: adversarial values (NUL and other control characters,
  unicode, long and ~1 MB strings, integer extremes, NaN, infinities and 1e308, unknown enum
  numbers, duplicates in repeated fields, missing fields, nested messages and maps) mixed with
  plausible ones (``hints``: dimension names, live session ids, valid page tokens) that get
  past the first validation.
- :func:`undecodable` draws bytes that are no valid request: garbage, truncated messages, and
  invalid UTF-8 in a string field.
- :func:`call` sends bytes through a generic ``unary_unary``/``unary_stream`` with identity
  serializers; :class:`Tally` counts the statuses and keeps every call that broke a property:
  INTERNAL or UNKNOWN; no answer within the deadline (a hang); an answer lost on the way (the
  client's gRPC library replaced it, e.g. because its message was over the metadata limit); or
  a peer service's INTERNAL relayed under another status.
- :func:`fuzz` runs one strategy through Hypothesis for a fixed number of examples.

Used by tests/test_fuzz.py (a small, derandomized budget) and scripts/fuzz.py (long runs).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import EncodeError, Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from steerlab_api.v1 import inference_pb2, jobs_pb2, registry_pb2, sessions_pb2

T = TypeVar("T")
Strategy = st.SearchStrategy[Any]
Hints = Mapping[str, Strategy]  # "Message.field" or a bare field name -> plausible values

SERVICE_MODULES: tuple[ModuleType, ...] = (registry_pb2, sessions_pb2, jobs_pb2, inference_pb2)
BAD_CODES = frozenset({"INTERNAL", "UNKNOWN"})
HANG = "HANG"  # a client-side DEADLINE_EXCEEDED: the server did not answer in time
# The client's gRPC library put a status of its own in place of the server's answer (e.g. a
# status message over the client's metadata limit: "received metadata size exceeds hard limit").
LOST = "LOST"
LOST_MARKERS = ("received metadata size exceeds", "Stream removed")
# Another status carrying a SteerLab INTERNAL error's message: a service relayed a peer's bug
# (e.g. as UNAVAILABLE, which clients retry).
RELAYED = "RELAYED_INTERNAL"
RELAYED_MARKER = re.compile(r"internal error in \w+; see the server log")
VIOLATIONS = BAD_CODES | {HANG, LOST, RELAYED}
STREAM_OPEN = "STREAM_OPEN"  # a stream still open after its first message: we hung up
MAX_REQUEST_BYTES = 3 * 1024 * 1024  # larger draws are rejected (a 1 MB string stays possible)
MAX_DEPTH = 4  # nested messages below this are left empty
# How many fields in 10 get an adversarial value, drawn once per example (shared by all its
# fields): a third of the requests are wholly plausible and get past the first validation,
# most others break one or two fields, and some break everything.
ADVERSARIAL_RATE = st.shared(st.sampled_from((0, 0, 1, 2, 5, 10)), key="steerlab-fuzz-adversarial-rate")

INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
FLOAT_TYPES = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
SPECIAL_STRINGS = (
    "",
    "\x00",
    "cost\x00",
    "\x00cost",
    "\x1b[31m",
    "\r\n",
    "\x7f\x85",
    "\u2028",
    "\ufeff",
    "\u202e",
    "\uffff",
    "\U0010ffff",
    "🙂",
    "İ",
    "e\u0301",
    " ",
    "COST",
    "cost ",
    "../../etc/passwd",
    "' OR '1'='1",
    "%s%n%x",
    "null",
    "NaN",
    "-1",
    "99999999999999999999",
    "a" * 65,
    "a" * 129,
)
LONG_LENGTHS = (129, 1025, 8193, 65537, 1 << 20)  # the last: the ~1 MB string
SPECIAL_FLOATS = (
    math.nan,
    math.inf,
    -math.inf,
    1e308,
    -1e308,
    1.7976931348623157e308,
    5e-324,
    -0.0,
    100.0000001,
    -100.0000001,
    1e-300,
)
SPECIAL_BYTES = (b"", b"\x00", b"\xff\xfe", b"{}", b"null", b"\n\n\n")
# Wire-format garbage: an over-long varint, a length past the end, field number 0, wire types
# 6 and 7, an unmatched group, a tag without a value, and a 4 GB length.
BROKEN_WIRE = (
    b"\xff" * 11,
    b"\x0a\x05ab",
    b"\x00",
    b"\x0e",
    b"\x0f",
    b"\x0b",
    b"\x0c",
    b"\x08",
    b"\x12\xff\xff\xff\xff\x0f",
)
# Not UTF-8: a lone continuation, a bad two-byte sequence, an encoded surrogate, a 5-byte form,
# an overlong NUL, and text that turns bad half-way.
INVALID_UTF8 = (b"\x80", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\x80", b"cost\xff")
NUMERALS = (
    "-1",
    "0",
    "99999999999999999999999999",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "1e309",
    "nan",
    "",
    " 1",
    "1_000",
    "\u0663",
    "0x10",
)


# -- the API -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    """One method of one service, as its descriptor describes it."""

    service: str  # "steerlab.v1.RegistryService"
    name: str  # "CreateDimension"
    request: Descriptor
    streaming: bool  # server streaming (no SteerLab RPC streams requests)

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def label(self) -> str:
        """``RegistryService.CreateDimension``."""
        return f"{self.service.rsplit('.', 1)[-1]}.{self.name}"


def _rpc(method: MethodDescriptor) -> Rpc:
    return Rpc(method.containing_service.full_name, method.name, method.input_type, method.server_streaming)


def all_rpcs(modules: Iterable[ModuleType] = SERVICE_MODULES) -> list[Rpc]:
    """Every method of every service the modules' descriptors declare, in declaration order."""
    return [
        _rpc(method)
        for module in modules
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]


# -- typed requests ----------------------------------------------------------------------------


def _repeat(unit: str, length: int) -> str:
    return (unit * (length // len(unit) + 1))[:length]


def adversarial_strings() -> Strategy:
    """Specials, control characters, any unicode (protobuf strings hold no lone surrogates),
    and long strings up to ~1 MB."""
    control = st.characters(min_codepoint=0, max_codepoint=0x1F) | st.sampled_from("\x7f\x85\u2028")
    return st.one_of(
        st.sampled_from(SPECIAL_STRINGS),
        st.text(control, min_size=1, max_size=16),
        st.text(max_size=40),
        st.builds(_repeat, st.text(min_size=1, max_size=4), st.sampled_from(LONG_LENGTHS)),
    )


def adversarial_ints(low: int, high: int) -> Strategy:
    """The range's extremes and their neighbours, small specials, and anything in range."""
    specials = {low, low + 1, high, high - 1, -1, 0, 1, 99, 2**31, 2**32, -(2**31) - 1}
    return st.sampled_from(sorted(v for v in specials if low <= v <= high)) | st.integers(low, high)


def adversarial_floats(width: int) -> Strategy:
    return st.sampled_from(SPECIAL_FLOATS) | st.floats(width=width)  # type: ignore[arg-type]


def adversarial_bytes(plausible: Strategy | None) -> Strategy:
    """Short garbage, specials, long runs up to ~1 MB, and (given valid values) their truncations."""
    branches = [
        st.binary(max_size=64),
        st.sampled_from(SPECIAL_BYTES),
        st.builds(
            lambda unit, n: (unit * n)[:n], st.binary(min_size=1, max_size=4), st.sampled_from(LONG_LENGTHS)
        ),
    ]
    if plausible is not None:
        branches.append(
            st.builds(lambda data, cut: data[: cut % (len(data) + 1)], plausible, st.integers(0, 1 << 16))
        )
    return st.one_of(branches)


def _plausible_scalar(field: FieldDescriptor) -> Strategy:
    """A value of the field's type that a server is likely to accept, when no hint names one."""
    if field.type == FieldDescriptor.TYPE_STRING:
        return st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=16)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_ENUM:  # not the zero value: a missing field is that
        assert field.enum_type is not None
        numbers = [value.number for value in field.enum_type.values]
        return st.sampled_from([n for n in numbers if n] or numbers)
    if field.type in FLOAT_TYPES:
        return st.floats(-100, 100)
    return st.integers(1, 10)


def _adversarial_scalar(field: FieldDescriptor, plausible: Strategy | None) -> Strategy:
    if field.type == FieldDescriptor.TYPE_STRING:
        return adversarial_strings()
    if field.type == FieldDescriptor.TYPE_BYTES:
        return adversarial_bytes(plausible)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type in FLOAT_TYPES:
        return adversarial_floats(64 if field.type == FieldDescriptor.TYPE_DOUBLE else 32)
    if field.type == FieldDescriptor.TYPE_ENUM:  # open enums: any int32, e.g. 99, is sent as is
        return adversarial_ints(-(2**31), 2**31 - 1)
    return adversarial_ints(*INT_RANGES[field.type])


def _hint(hints: Hints, field: FieldDescriptor, suffix: str = "") -> Strategy | None:
    owner = field.containing_type.name if field.containing_type is not None else ""
    qualified = f"{owner}.{field.name}{suffix}"
    return hints[qualified] if qualified in hints else hints.get(f"{field.name}{suffix}")


def _mixed(plausible: Strategy, adversarial: Strategy) -> Strategy:
    """Adversarial at the example's :data:`ADVERSARIAL_RATE` (out of 10), else plausible."""
    chosen = st.tuples(ADVERSARIAL_RATE, st.integers(0, 9)).map(lambda pair: pair[1] >= 10 - pair[0])
    return chosen.flatmap(lambda bad: adversarial if bad else plausible)


def scalar_values(field: FieldDescriptor, hints: Hints, suffix: str = "") -> Strategy:
    """One value of a non-message field: a hint or a plausible value, or an adversarial one."""
    hinted = _hint(hints, field, suffix)
    plausible = _plausible_scalar(field) if hinted is None else hinted
    return _mixed(plausible, _adversarial_scalar(field, hinted))


def _is_map(field: FieldDescriptor) -> bool:
    return bool(field.message_type is not None and field.message_type.GetOptions().map_entry)


def _element_values(field: FieldDescriptor, hints: Hints, depth: int) -> Strategy:
    if field.message_type is not None:
        return messages(field.message_type, hints, depth + 1)
    return scalar_values(field, hints)


def _size(value: Any) -> int:
    """Roughly how many bytes ``value`` takes serialized."""
    if isinstance(value, Message):
        return value.ByteSize()
    if isinstance(value, str):
        return len(value.encode())
    return len(value) if isinstance(value, bytes) else 8


def _with_duplicates(items: list[Any], copies: int) -> list[Any]:
    """``items`` and ``copies`` more of its first element, as many as fit :data:`MAX_REQUEST_BYTES`."""
    if not items:
        return items
    fitting = min(copies, MAX_REQUEST_BYTES // max(_size(items[0]), 1))
    return items + items[:1] * fitting


def repeated_values(field: FieldDescriptor, hints: Hints, depth: int) -> Strategy:
    """Short lists (a missing field is the empty list), often with the first element repeated
    (a few times, or 1000)."""
    element = _element_values(field, hints, depth)
    copies = st.sampled_from((0, 0, 1, 2, 1000))
    return st.builds(_with_duplicates, st.lists(element, min_size=1, max_size=4), copies)


def map_values(field: FieldDescriptor, hints: Hints, depth: int) -> Strategy:
    """A small map: keys from the field's hints (``strengths.key``) or adversarial, values likewise."""
    entry = _message_type(field)
    key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
    key_hint = _hint(hints, field, ".key")
    keys = (
        scalar_values(key_field, {})
        if key_hint is None
        else _mixed(key_hint, _adversarial_scalar(key_field, None))
    )
    if value_field.message_type is not None:
        values = messages(value_field.message_type, hints, depth + 1)
    else:
        value_hint = _hint(hints, field, ".value")
        plausible = _plausible_scalar(value_field) if value_hint is None else value_hint
        values = _mixed(plausible, _adversarial_scalar(value_field, value_hint))
    return st.dictionaries(keys, values, max_size=4)


def field_values(field: FieldDescriptor, hints: Hints, depth: int) -> Strategy:
    """Any field's value: a map, a list, a nested message or a scalar."""
    if _is_map(field):
        return map_values(field, hints, depth)
    if field.is_repeated:
        return repeated_values(field, hints, depth)
    if field.message_type is not None:
        return messages(field.message_type, hints, depth + 1)
    return scalar_values(field, hints)


def _message_type(field: FieldDescriptor) -> Descriptor:
    assert field.message_type is not None, f"{field.full_name} holds no message"
    return field.message_type


def _assign(message: Message, field: FieldDescriptor, value: Any) -> None:
    target: Any = getattr(message, field.name)
    if _is_map(field):
        nested = _message_type(field).fields_by_name["value"].message_type is not None
        for key, item in value.items():
            if nested:
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif field.is_repeated:
        target.extend(value)
    elif field.message_type is not None:
        target.CopyFrom(value)
    else:
        setattr(message, field.name, value)


def _field_groups(descriptor: Descriptor) -> list[tuple[FieldDescriptor, ...]]:
    """Each oneof is one group (at most one of its fields is set); every other field its own."""
    groups: list[tuple[FieldDescriptor, ...]] = [tuple(o.fields) for o in descriptor.oneofs]
    grouped = {f.full_name for group in groups for f in group}
    groups += [(f,) for f in descriptor.fields if f.full_name not in grouped]
    return groups


def _group_values(group: tuple[FieldDescriptor, ...], hints: Hints, depth: int) -> Strategy:
    """None (the group missing) one time in four (or fewer), else one field of the group and its value."""
    present = [st.tuples(st.just(f), field_values(f, hints, depth)) for f in group]
    return st.sampled_from((*present * 3, st.none())).flatmap(lambda chosen: chosen)


def messages(descriptor: Descriptor, hints: Hints, depth: int = 0) -> Strategy:
    """Instances of the message: each field (each oneof) present three times in four, missing
    otherwise; below :data:`MAX_DEPTH` nested messages stay empty."""
    cls = GetMessageClass(descriptor)
    if depth > MAX_DEPTH:
        return st.builds(cls)
    choices = [_group_values(group, hints, depth) for group in _field_groups(descriptor)]

    def build(assignments: tuple[tuple[FieldDescriptor, Any] | None, ...]) -> Message:
        message = cls()
        for assignment in assignments:
            if assignment is not None:
                _assign(message, *assignment)
        return message

    return st.tuples(*choices).map(build)


def _fits(message: Message) -> bool:
    try:
        return message.ByteSize() <= MAX_REQUEST_BYTES
    except EncodeError:  # over 2 GB
        return False


def requests(descriptor: Descriptor, hints: Hints) -> Strategy:
    """Request messages of at most :data:`MAX_REQUEST_BYTES` serialized."""
    return messages(descriptor, hints).filter(_fits)


# -- undecodable requests ----------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def nest(path: Sequence[int], payload: bytes) -> bytes:
    """``payload`` as the length-delimited field at ``path`` (field numbers, outermost first)."""
    for number in reversed(path):
        payload = _varint(number << 3 | 2) + _varint(len(payload)) + payload
    return payload


def string_paths(descriptor: Descriptor, depth: int = 0) -> list[tuple[int, ...]]:
    """Paths to every string field (through messages, lists and map entries), to a depth of 3."""
    paths: list[tuple[int, ...]] = []
    for member in descriptor.fields:
        if member.type == FieldDescriptor.TYPE_STRING:
            paths.append((member.number,))
        elif member.message_type is not None and depth < 3:
            paths += [(member.number, *rest) for rest in string_paths(member.message_type, depth + 1)]
    return paths


def undecodable(descriptor: Descriptor, hints: Hints) -> Strategy:
    """Bytes that no server should take for a request: wire-format garbage, random bytes,
    truncated valid requests, and (where the message has a string) invalid UTF-8 in one."""
    truncated = st.builds(
        lambda data, cut: data[: 1 + cut % max(len(data) - 1, 1)],
        requests(descriptor, hints).map(lambda m: m.SerializeToString()),
        st.integers(0, 1 << 16),
    ).filter(bool)
    branches = [st.sampled_from(BROKEN_WIRE), st.binary(min_size=1, max_size=64), truncated]
    paths = string_paths(descriptor)
    if paths:
        branches.append(st.builds(nest, st.sampled_from(paths), st.sampled_from(INVALID_UTF8)))
    return st.one_of(branches)


def _mutate_token(token: str, numeral: str) -> str:
    """A page token with its number replaced: base64 text as the server would decode it."""
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = token
    mutated = re.sub(r"\d+", numeral, text, count=1) if re.search(r"\d", text) else text + numeral
    return base64.urlsafe_b64encode(mutated.encode()).decode()


def page_tokens(valid: Sequence[str]) -> Strategy:
    """Tokens a server handed out, and the same with their number changed."""
    tokens = [t for t in valid if t] or ["YWZ0ZXI6MQ=="]
    return st.sampled_from(tokens) | st.builds(
        _mutate_token, st.sampled_from(tokens), st.sampled_from(NUMERALS)
    )


# -- calling -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one call got: a status code name, or :data:`HANG`, :data:`LOST`, :data:`RELAYED` or
    :data:`STREAM_OPEN`."""

    code: str
    details: str
    messages: int
    seconds: float

    @property
    def violation(self) -> bool:
        return self.code in VIOLATIONS


def _drain(responses: Any, window_s: float) -> tuple[int, bool]:
    """Read a stream to its end, or hang up ``window_s`` after its first message; returns the
    number of messages and whether we hung up."""
    count, hung_up, timer = 0, threading.Event(), None

    def hang_up() -> None:
        hung_up.set()
        responses.cancel()

    try:
        for _ in responses:
            count += 1
            if timer is None:
                timer = threading.Timer(window_s, hang_up)
                timer.start()
    except grpc.RpcError:
        if not hung_up.is_set():
            raise
    finally:
        if timer is not None:
            timer.cancel()
    return count, hung_up.is_set()


def call(
    channel: grpc.Channel, rpc: Rpc, payload: bytes, deadline_s: float, window_s: float = 0.5
) -> Outcome:
    """Send ``payload`` as the request, as bytes, and classify what came back."""
    started = time.monotonic()
    try:
        if rpc.streaming:
            count, hung_up = _drain(channel.unary_stream(rpc.path)(payload, timeout=deadline_s), window_s)
            code = STREAM_OPEN if hung_up else "OK"
            return Outcome(code, "", count, time.monotonic() - started)
        channel.unary_unary(rpc.path)(payload, timeout=deadline_s)
        return Outcome("OK", "", 1, time.monotonic() - started)
    except grpc.RpcError as error:
        seconds = time.monotonic() - started
        code, details = error.code().name, error.details() or ""
        if code == "DEADLINE_EXCEEDED" and seconds >= 0.9 * deadline_s:
            return Outcome(HANG, details, 0, seconds)
        if any(marker in details for marker in LOST_MARKERS):
            return Outcome(LOST, f"{code}: {details}", 0, seconds)
        if code != "INTERNAL" and RELAYED_MARKER.search(details):
            return Outcome(RELAYED, f"{code}: {details}", 0, seconds)
        return Outcome(code, details, 0, seconds)


def health(channel: grpc.Channel, timeout_s: float = 10.0) -> str:
    """The server's overall health status name (SERVING, or the error that came instead)."""
    try:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
    except grpc.RpcError as error:
        return f"{error.code().name}: {error.details()}"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


# -- describing and counting -------------------------------------------------------------------


def _short(value: Any) -> str:
    if isinstance(value, str | bytes) and len(value) > 48:
        return f"<{len(value)} {'chars' if isinstance(value, str) else 'bytes'} {value[:16]!r}...>"
    if isinstance(value, Message):
        return describe(value)
    return repr(value)


def describe(message: Message) -> str:
    """A one-line, readable account of a message; long strings are abbreviated."""
    parts = []
    for member, value in message.ListFields():
        if _is_map(member):
            shown = "{" + ", ".join(f"{_short(k)}: {_short(value[k])}" for k in value) + "}"
        elif member.is_repeated:
            shown = f"[{', '.join(_short(v) for v in list(value)[:6])}{', ...' if len(value) > 6 else ''}]"
            shown += f" ({len(value)} items)" if len(value) > 6 else ""
        else:
            shown = _short(value)
        parts.append(f"{member.name}={shown}")
    return f"{message.DESCRIPTOR.name}({', '.join(parts)})"


def describe_bytes(payload: bytes) -> str:
    return f"bytes {_short(payload)}" if len(payload) > 48 else f"bytes {payload!r}"


def _shape(details: str) -> str:
    """An error message with its particulars blanked: quoted text and numbers."""
    shape = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "'…'", details)
    return re.sub(r"\d+", "N", shape)[:160]


@dataclass
class Violation:
    """A call that broke a property; the smallest request seen for its kind of failure."""

    rpc: str
    backend: str
    code: str
    details: str
    request: str  # readable
    payload: bytes
    count: int = 1


@dataclass
class Tally:
    """Examples and statuses per (RPC, backend), and the distinct violations."""

    examples: Counter[tuple[str, str]] = field(default_factory=Counter)
    statuses: dict[tuple[str, str], Counter[str]] = field(default_factory=dict)
    slowest: dict[tuple[str, str], float] = field(default_factory=dict)
    violations: dict[tuple[str, str, str, str], Violation] = field(default_factory=dict)
    reasons: dict[tuple[str, str], Counter[str]] = field(default_factory=dict)  # "CODE: shape"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, rpc: str, backend: str, payload: bytes, request: str, outcome: Outcome) -> None:
        key = (rpc, backend)
        with self._lock:
            self.examples[key] += 1
            self.statuses.setdefault(key, Counter())[outcome.code] += 1
            self.slowest[key] = max(self.slowest.get(key, 0.0), outcome.seconds)
            self.reasons.setdefault(key, Counter())[f"{outcome.code}: {_shape(outcome.details)}"] += 1
            if outcome.violation:
                self._keep(Violation(rpc, backend, outcome.code, outcome.details, request, payload))

    def _keep(self, found: Violation) -> None:
        key = (found.rpc, found.backend, found.code, _shape(found.details))
        kept = self.violations.get(key)
        if kept is None:
            self.violations[key] = found
            return
        found.count = kept.count + 1
        self.violations[key] = found if len(found.payload) < len(kept.payload) else kept
        self.violations[key].count = found.count

    def found(self, rpc: str | None = None, backend: str | None = None) -> list[Violation]:
        """Distinct violations, optionally of one label (``Service.Method [(bytes)]``) and backend."""
        return [v for v in self.violations.values() if rpc in (None, v.rpc) and backend in (None, v.backend)]

    def table(self) -> str:
        """RPC, backend, examples, INTERNAL, UNKNOWN, hangs, lost answers, relayed INTERNALs, the
        slowest call, and every status seen."""
        header = (
            f"{'RPC':<44} {'backend':<10} {'examples':>8} {'INTERNAL':>8} {'UNKNOWN':>7} {'hangs':>5} "
            f"{'lost':>4} {'relayed':>7} {'slowest':>8}"
        )
        lines = [header + "  statuses", "-" * (len(header) + 30)]
        for (rpc, backend), total in sorted(self.examples.items()):
            seen, slowest = self.statuses[(rpc, backend)], self.slowest[(rpc, backend)]
            codes = ", ".join(f"{code} {n}" for code, n in seen.most_common())
            lines.append(
                f"{rpc:<44} {backend:<10} {total:>8} {seen['INTERNAL']:>8} {seen['UNKNOWN']:>7} "
                f"{seen[HANG]:>5} {seen[LOST]:>4} {seen[RELAYED]:>7} {slowest:>7.2f}s  {codes}"
            )
        return "\n".join(lines)


def reasons(tally: Tally, top: int = 5) -> str:
    """The most common answers (status and message shape) per RPC and backend."""
    lines = []
    for (rpc, backend), seen in sorted(tally.reasons.items()):
        lines.append(f"{rpc} on {backend}:")
        lines += [f"    {n:>5}  {reason}" for reason, n in seen.most_common(top)]
    return "\n".join(lines)


def report(violations: Sequence[Violation]) -> str:
    """One paragraph per distinct violation: where, what came back, and the smallest request."""
    return "\n".join(
        f"{v.rpc} on {v.backend}: {v.code} x{v.count}: {v.details[:300]!r}\n    request: {v.request[:600]}"
        for v in violations
    )


# -- running -----------------------------------------------------------------------------------


def fuzz(
    values: st.SearchStrategy[T], check: Callable[[T], None], examples: int, derandomize: bool = True
) -> None:
    """Run ``check`` on up to ``examples`` values drawn by Hypothesis (no shrinking: ``check``
    records what it finds instead of raising, so that every example is counted)."""

    @settings(
        max_examples=examples,
        derandomize=derandomize,
        deadline=None,
        database=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(values)
    def run(value: T) -> None:
        check(value)

    run()
