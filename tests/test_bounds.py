"""Bad input at the edges gets one clear status on both backends and loses nothing (issue 20).

Each case is a reproduction from the issue, sent over a real socket to the registry and the
session service on SQLite and on PostgreSQL: NUL characters, page tokens past 64 bits, bytes
that are not a protobuf message, errors about a megabyte of input, and vector sets whose
numbers would silently empty every answer.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from safetensors.torch import save as save_tensors
from service_support import ServerThread, fresh_postgres_database, make_vector_set

from steerlab.serving import ServerSettings
from steerlab.sessions.learn import FeedbackInterpreter, make_interpreter
from steerlab.sessions.server import SessionSettings, build_session_server
from steerlab_api.v1 import registry_pb2, sessions_pb2
from steerlab_client import ClientError, RegistryClient, SessionClient

OVERFLOWING_TOKEN = base64.urlsafe_b64encode(b"after:99999999999999999999999999").decode()


@dataclass
class Services:
    registry: RegistryClient
    sessions: SessionClient
    registry_target: str
    sessions_target: str


@pytest.fixture(scope="module")
def interpreter() -> FeedbackInterpreter:
    return make_interpreter()


@pytest.fixture(params=["sqlite", "postgresql"])
def services(
    request: pytest.FixtureRequest, tmp_path: Path, interpreter: FeedbackInterpreter
) -> Iterator[Services]:
    if request.param == "sqlite":
        yield from _serve(f"sqlite:///{tmp_path / 'steerlab.db'}", interpreter)
        return
    with fresh_postgres_database() as url:
        yield from _serve(url, interpreter)


def _serve(url: str, interpreter: FeedbackInterpreter) -> Iterator[Services]:
    registry = ServerThread(url)
    settings = SessionSettings(database_url=url, server=ServerSettings(port=0, metrics_port=0))
    server, manager = build_session_server(settings, interpreter)
    sessions = ServerThread(server=server, closing=manager.store.close)
    with RegistryClient(registry.target) as registry_client, SessionClient(sessions.target) as session_client:
        yield Services(registry_client, session_client, registry.target, sessions.target)
    sessions.stop()
    registry.stop()


def refused(code: grpc.StatusCode, match: str = "") -> pytest.RaisesExc[ClientError]:
    return pytest.raises(ClientError, match=f"^{code.name}: .*{match}")


def test_nul_characters_are_refused_the_same_way_on_both_backends(services: Services) -> None:
    session = services.sessions.create("ana", "smollm2-135m")
    with refused(grpc.StatusCode.INVALID_ARGUMENT, "NUL character"):
        services.sessions.add_user_turn(session.id, "Where should we eat?\x00")
    with refused(grpc.StatusCode.INVALID_ARGUMENT, "NUL character"):
        services.sessions.get(session.id[:8] + "\x00")
    with refused(grpc.StatusCode.INVALID_ARGUMENT, "user_id must be 1..200 printable characters"):
        services.sessions.create("ana\x00", "smollm2-135m")
    assert services.sessions.get(session.id).turn_count == 0


def test_page_tokens_past_64_bits_are_invalid_arguments(services: Services) -> None:
    with refused(grpc.StatusCode.INVALID_ARGUMENT, "invalid page_token"):
        services.sessions._call(
            services.sessions._stub.ListSessions,
            sessions_pb2.ListSessionsRequest(user_id="ana", page_token=OVERFLOWING_TOKEN),
        )
    with refused(grpc.StatusCode.INVALID_ARGUMENT, "invalid page_token"):
        services.registry.list_vector_sets_page("cost", page_token=OVERFLOWING_TOKEN)


def test_bytes_that_are_not_a_message_are_invalid_arguments(services: Services) -> None:
    """Not protobuf at all, and a string field that is not UTF-8: both named, never UNKNOWN."""
    not_utf8 = b"\x0a\x02\xff\xfe"  # field 1 (session_id), 2 bytes, not UTF-8
    cases = [
        (services.sessions_target, "/steerlab.v1.SessionService/GetSession", not_utf8),
        (services.sessions_target, "/steerlab.v1.SessionService/GetSession", b"\xff\xff\xff"),
        (services.registry_target, "/steerlab.v1.RegistryService/ListDimensions", b"\x0a"),
    ]
    for target, method, payload in cases:
        with grpc.insecure_channel(target) as channel:
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.RpcError) as raised:
                call(payload, timeout=10)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, raised.value.details())
        assert "not a valid" in str(raised.value.details())


def test_errors_quote_at_most_100_characters_of_what_was_sent(services: Services) -> None:
    """A megabyte id is NOT_FOUND with a short message, not a status too large to deliver."""
    with refused(grpc.StatusCode.NOT_FOUND) as missing:
        services.sessions.get("s" * 1_000_000)
    assert len(missing.value.message) < 700 and "s" * 100 in missing.value.message
    with refused(grpc.StatusCode.INVALID_ARGUMENT) as named:
        services.registry.get("d" * 1_000_000, model="tiny-a")
    assert len(named.value.message) < 700


def _with_metadata(**changes: object) -> bytes:
    """A vector set file whose metadata says ``changes`` (which the core would refuse to write)."""
    vector_set = make_vector_set("cost")
    metadata = {**vector_set.metadata(), **changes}
    metadata_text = json.dumps(metadata)  # NaN and Infinity pass through, as another tool might write
    return save_tensors({"directions": vector_set.directions}, metadata={"steerlab": metadata_text})


def test_vector_sets_that_cannot_steer_are_refused_at_push(services: Services) -> None:
    for poison, message in (
        ({"alpha_max": 1e300}, "alpha_max must be above 0 and at most 1000"),
        ({"alpha_max": float("nan")}, "NaN, which JSON does not allow"),
        ({"parameters": {"perplexity_bound": float("inf")}}, "Infinity, which JSON does not allow"),
    ):
        with refused(grpc.StatusCode.INVALID_ARGUMENT, message):
            services.registry.push(_with_metadata(**poison))
    assert list(services.registry.list_vector_sets("cost")) == []
    services.registry.push(make_vector_set("cost").to_bytes())
    selector = registry_pb2.VectorSetSelector(dimension="cost", model="tiny-a", version=1)
    request = registry_pb2.GetVectorSetRequest(selector=selector, view=99)  # type: ignore[arg-type]
    with refused(grpc.StatusCode.INVALID_ARGUMENT, "view must be one of basic, full, got 99"):
        services.registry._call(services.registry._stub.GetVectorSet, request)
