"""The registry over a real socket, backed by a real PostgreSQL: life cycle, concurrency, bad input."""

from __future__ import annotations

import json
import struct
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from safetensors.torch import save as save_tensors
from service_support import DIGEST_B, ServerThread, fresh_postgres_database, make_vector_set

from steerlab.steering import VectorSet
from steerlab_client import ClientError, RegistryClient


@pytest.fixture
def database_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def server(database_url: str) -> Iterator[ServerThread]:
    running = ServerThread(database_url)
    yield running
    running.stop()


@pytest.fixture
def client(server: ServerThread) -> Iterator[RegistryClient]:
    with RegistryClient(server.target) as opened:
        yield opened


def _raises(code: grpc.StatusCode, match: str) -> pytest.RaisesExc[ClientError]:
    return pytest.raises(ClientError, match=f"{code.name}: .*{match}")


def test_life_cycle_push_list_pull_alias_rollback_delete(client: RegistryClient, tmp_path: Path) -> None:
    originals = [make_vector_set(seed=i) for i in range(3)]
    for i, original in enumerate(originals):
        pushed = client.push(original.to_bytes(), labels={"run": str(i)}, author="ana")
        assert (pushed.dimension, pushed.version, pushed.model_name) == ("cost", i + 1, "tiny-a")
    assert [(v.version, v.labels["run"]) for v in client.list_vector_sets(dimension="cost")] == [
        (1, "0"),
        (2, "1"),
        (3, "2"),
    ]

    assert client.set_alias("cost", 3, "production").previous_version == 0
    pulled = client.pull("cost", tmp_path / "prod.safetensors", alias="production")
    assert pulled.version == 3
    rebuilt = VectorSet.load(tmp_path / "prod.safetensors")
    assert torch.equal(rebuilt.directions, originals[2].directions)  # bit for bit
    assert rebuilt.metadata() == originals[2].metadata()

    rollback = client.set_alias("cost", 2, "production")  # one call
    assert (rollback.previous_version, rollback.alias.version) == (3, 2)
    assert client.get("cost", alias="production").version == 2
    assert [a.name for a in client.list_aliases("cost")] == ["production"]

    with _raises(grpc.StatusCode.FAILED_PRECONDITION, "target of alias"):
        client.delete("cost", 2)
    assert client.delete("cost", 3).version == 3
    with _raises(grpc.StatusCode.NOT_FOUND, "was deleted"):
        client.get("cost", version=3)
    assert [v.version for v in client.list_vector_sets(dimension="cost")] == [1, 2]


def test_list_pages_through_everything(client: RegistryClient) -> None:
    for seed in range(7):
        client.push(make_vector_set(seed=seed).to_bytes())
    assert [v.version for v in client.list_vector_sets(dimension="cost", page_size=3)] == list(range(1, 8))


def test_a_retried_push_with_its_request_id_creates_one_version(client: RegistryClient) -> None:
    first = client.push(make_vector_set("age", seed=1).to_bytes(), request_id="retry-1")
    again = client.push(make_vector_set("age", seed=1).to_bytes(), request_id="retry-1")
    assert again.version == first.version
    assert [v.version for v in client.list_vector_sets(dimension="age")] == [first.version]


def test_concurrent_pushes_to_two_replicas_get_distinct_consecutive_versions(
    server: ServerThread, database_url: str
) -> None:
    replica = ServerThread(database_url)
    barrier = threading.Barrier(10)

    def push(i: int) -> int:
        target = server.target if i % 2 else replica.target
        with RegistryClient(target) as client:
            barrier.wait()
            return client.push(make_vector_set(seed=i).to_bytes(), author=f"w{i}").version

    try:
        with ThreadPoolExecutor(10) as pool:
            versions = sorted(pool.map(push, range(10)))
    finally:
        replica.stop()
    assert versions == list(range(1, 11))
    with RegistryClient(server.target) as client:
        assert sorted(v.author for v in client.list_vector_sets("cost")) == sorted(f"w{i}" for i in range(10))


def test_data_survives_a_server_restart(database_url: str, tmp_path: Path) -> None:
    original = make_vector_set(seed=4)
    first = ServerThread(database_url)
    with RegistryClient(first.target) as client:
        client.push(original.to_bytes())
        client.set_alias("cost", 1, "production")
    first.stop()
    second = ServerThread(database_url)
    try:
        with RegistryClient(second.target) as client:
            client.pull("cost", tmp_path / "cost.safetensors", alias="production")
            assert client.push(make_vector_set(seed=5).to_bytes()).version == 2
    finally:
        second.stop()
    assert torch.equal(VectorSet.load(tmp_path / "cost.safetensors").directions, original.directions)


def _file_with(directions: torch.Tensor, metadata: dict[str, object]) -> bytes:
    """A vector set file written around the core's checks, as a broken or hostile client might."""
    return save_tensors({"directions": directions}, metadata={"steerlab": json.dumps(metadata)})


def test_bad_uploads_get_a_status_that_says_what_is_wrong(client: RegistryClient) -> None:
    good = make_vector_set()
    with_nan = good.directions.clone()
    with_nan[1, 2] = float("nan")
    nan_meta = {**good.metadata(), "directions_sha256": _sha(with_nan)}
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "NaN or infinite"):
        client.push(_file_with(with_nan, nan_meta))

    narrow = good.directions[:, :6] / good.directions[:, :6].norm(dim=-1, keepdim=True)
    narrow_meta = {**good.metadata(), "directions_sha256": _sha(narrow)}
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "declares 4 layers of hidden size 8"):
        client.push(_file_with(narrow, narrow_meta))

    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "checksum mismatch"):
        client.push(_file_with(-good.directions, good.metadata()))
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "not a safetensors file"):
        client.push(b"\x00" * 64)
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "no vector set file"):
        client.push(b"")

    unknown = {**good.metadata(), "dimension": {**good.dimension.to_dict(), "name": "spice"}}
    with _raises(grpc.StatusCode.NOT_FOUND, "unknown dimension 'spice'"):
        client.push(_file_with(good.directions, unknown))
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "invalid label key"):
        client.push(good.to_bytes(), labels={"Bad Key": "x"})
    assert list(client.list_vector_sets()) == []  # nothing half-stored


def _sha(directions: torch.Tensor) -> str:
    from steerlab.steering.vectorset import directions_digest

    return directions_digest(directions)


def test_bad_names_and_references_are_refused(client: RegistryClient) -> None:
    client.push(make_vector_set().to_bytes())
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "invalid dimension name 'Cost Dim'"):
        client.get("Cost Dim")
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "invalid dimension name"):
        client.create_dimension("9lives", "no", "yes")
    with _raises(grpc.StatusCode.ALREADY_EXISTS, "'cost' already exists"):
        client.create_dimension("cost", "budget", "luxury")
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "invalid alias name"):
        client.set_alias("cost", 1, "PROD!")
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "version must be 1 or more"):
        client.get("cost", version=0)
    with _raises(grpc.StatusCode.NOT_FOUND, "no version 4"):
        client.get("cost", version=4)
    client.push(make_vector_set(digest=DIGEST_B, model_name="tiny-b").to_bytes())
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "several models"):
        client.get("cost")
    assert client.get("cost", model="tiny-b").model.weights_digest == DIGEST_B
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "invalid page_token"):
        client.list_vector_sets_page(page_token="garbage")
    with _raises(grpc.StatusCode.INVALID_ARGUMENT, "page_size must not be negative"):
        client.list_vector_sets_page(page_size=-1)


def test_oversized_messages_are_refused_with_resource_exhausted(database_url: str) -> None:
    small = ServerThread(database_url, max_message_bytes=64 * 1024)
    try:
        with RegistryClient(small.target) as client:
            big = make_vector_set(layers=4, hidden=8192)  # 128 KiB of directions
            with _raises(grpc.StatusCode.RESOURCE_EXHAUSTED, ""):
                client.push(big.to_bytes())
            assert client.push(make_vector_set().to_bytes()).version == 1  # the server is fine
    finally:
        small.stop()


def test_corrupt_stored_vectors_are_data_loss(
    server: ServerThread, client: RegistryClient, tmp_path: Path
) -> None:
    client.push(make_vector_set().to_bytes())
    with server.store.database.transaction(write=True) as cursor:
        cursor.execute("SELECT vectors FROM vector_sets WHERE version = 1")
        stored = bytearray(cursor.fetchone()[0])
        stored[-4:] = struct.pack("<f", 0.5)
        cursor.execute("UPDATE vector_sets SET vectors = %s WHERE version = 1", (bytes(stored),))
    with _raises(grpc.StatusCode.DATA_LOSS, "failed its checksum"):
        client.pull("cost", tmp_path / "never.safetensors", version=1)
    assert not (tmp_path / "never.safetensors").exists()
    assert client.get("cost", version=1).version == 1  # the record itself is still listed


def test_health_reflection_and_metrics(server: ServerThread, client: RegistryClient) -> None:
    client.push(make_vector_set().to_bytes())
    with pytest.raises(ClientError):
        client.get("cost", version=9)
    channel = grpc.insecure_channel(server.target)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "steerlab.v1.RegistryService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for answer in answers for s in answer.list_services_response.service}
    assert "steerlab.v1.RegistryService" in names
    channel.close()

    metrics = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    assert 'steerlab_registry_requests_total{code="OK",method="CreateVectorSet"} 1.0' in metrics
    assert 'steerlab_registry_requests_total{code="NOT_FOUND",method="GetVectorSet"} 1.0' in metrics
    assert (
        'steerlab_registry_request_duration_seconds_count{code="OK",method="CreateVectorSet"} 1.0' in metrics
    )


def test_a_bug_is_internal_without_internals_and_the_server_carries_on(
    server: ServerThread, client: RegistryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise RuntimeError("secret connection string postgresql://admin:hunter2@db")

    monkeypatch.setattr(server.store, "list_dimensions", broken)
    with pytest.raises(ClientError) as caught:
        client.list_dimensions()
    assert caught.value.code == grpc.StatusCode.INTERNAL
    assert "hunter2" not in caught.value.message and "see the server log" in caught.value.message
    monkeypatch.undo()
    assert len(client.list_dimensions()) == 5
    metrics = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    assert 'steerlab_registry_requests_total{code="INTERNAL",method="ListDimensions"} 1.0' in metrics
