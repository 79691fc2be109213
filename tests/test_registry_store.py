"""The registry store behaves the same on PostgreSQL and SQLite: versions, aliases, integrity."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from service_support import DIGEST_A, DIGEST_B, fresh_postgres_database, make_vector_set, open_store

from steerlab.registry.schema import COMPONENT, MIGRATIONS
from steerlab.registry.store import RegistryStore
from steerlab.steering import Dimension
from steerlab.steering.errors import (
    AlreadyExistsError,
    DataLossError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from steerlab.storage import Migration, migrate, open_database


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        with fresh_postgres_database() as url:
            yield url


@pytest.fixture
def store(database_url: str) -> Iterator[RegistryStore]:
    opened = open_store(database_url)
    yield opened
    opened.close()


def test_a_new_registry_knows_the_builtin_dimensions(store: RegistryStore) -> None:
    names = [record.dimension.name for record in store.list_dimensions()]
    assert names == ["age", "ambiance", "cost", "culture", "time"]
    assert store.get_dimension("cost").dimension.positive_pole == "luxury"


def test_dimensions_are_created_once_and_validated(store: RegistryStore) -> None:
    created = store.create_dimension(Dimension("spice", "mild", "hot", "How spicy the food is."))
    assert created.dimension.name == "spice"
    assert store.get_dimension("spice").dimension == Dimension(
        "spice", "mild", "hot", "How spicy the food is."
    )
    with pytest.raises(AlreadyExistsError, match="'spice' already exists"):
        store.create_dimension(Dimension("spice", "mild", "hot"))
    with pytest.raises(InvalidArgumentError, match="invalid dimension name 'Spicy!'"):
        store.create_dimension(Dimension("Spicy!", "mild", "hot"))
    with pytest.raises(InvalidArgumentError, match="two different, non-empty poles"):
        store.create_dimension(Dimension("pace", "slow", "slow"))
    with pytest.raises(NotFoundError, match="unknown dimension 'pace'; registered dimensions: age, ambiance"):
        store.get_dimension("pace")


def test_versions_count_up_per_dimension_and_model(store: RegistryStore) -> None:
    versions = [store.create_vector_set(make_vector_set("cost", seed=i)).version for i in range(3)]
    assert versions == [1, 2, 3]
    other_model = make_vector_set("cost", digest=DIGEST_B, model_name="tiny-b")
    assert store.create_vector_set(other_model).version == 1
    assert store.create_vector_set(make_vector_set("age")).version == 1


def test_a_repeated_request_id_returns_the_first_version_instead_of_adding_one(store: RegistryStore) -> None:
    first = store.create_vector_set(make_vector_set(seed=1), request_id="job-1")
    again = store.create_vector_set(make_vector_set(seed=2), request_id="job-1")
    other = store.create_vector_set(make_vector_set(seed=3), request_id="job-2")
    assert (first.version, again.version, other.version) == (1, 1, 2)
    assert again.vectors_sha256 == first.vectors_sha256  # the first push's vectors were kept
    assert [r.version for r in store.list_vector_sets(dimension="cost").records] == [1, 2]


def test_get_by_version_alias_and_latest_round_trips_exactly(store: RegistryStore) -> None:
    originals = [make_vector_set(seed=i) for i in range(3)]
    for original in originals:
        store.create_vector_set(original, author="ana", labels={"team": "search"})
    store.set_alias("cost", "", "production", 2, updated_by="ana")

    by_version = store.get_vector_set("cost", version=1, with_vectors=True)
    by_alias = store.get_vector_set("cost", alias="production", with_vectors=True)
    latest = store.get_vector_set("cost", with_vectors=True)
    for record, original in ((by_version, originals[0]), (by_alias, originals[1]), (latest, originals[2])):
        rebuilt = record.vector_set()
        assert torch.equal(rebuilt.directions, original.directions)
        assert rebuilt.metadata() == original.metadata()
    assert (by_alias.version, by_alias.aliases, by_alias.author, by_alias.labels) == (
        2,
        ("production",),
        "ana",
        {"team": "search"},
    )
    assert store.get_vector_set("cost", version=1).vectors is None


def test_the_model_is_named_by_name_or_digest_prefix_and_never_guessed(store: RegistryStore) -> None:
    store.create_vector_set(make_vector_set(digest=DIGEST_A, model_name="tiny-a"))
    assert store.get_vector_set("cost").model_digest == DIGEST_A  # one model: no need to name it
    store.create_vector_set(make_vector_set(digest=DIGEST_B, model_name="tiny-b"))
    with pytest.raises(InvalidArgumentError, match="several models"):
        store.get_vector_set("cost")
    assert store.get_vector_set("cost", model="tiny-b").model_digest == DIGEST_B
    assert store.get_vector_set("cost", model="a1a1").model_digest == DIGEST_A
    with pytest.raises(NotFoundError, match="no vector sets of 'cost' for model 'gpt'"):
        store.get_vector_set("cost", model="gpt")


def test_aliases_move_atomically_for_promotion_and_rollback(store: RegistryStore) -> None:
    for seed in range(3):
        store.create_vector_set(make_vector_set(seed=seed))
    alias, previous = store.set_alias("cost", "", "production", 2)
    assert (alias.version, previous) == (2, 0)
    _, previous = store.set_alias("cost", "", "production", 3)  # promote
    assert previous == 2
    _, previous = store.set_alias("cost", "", "production", 2)  # roll back
    assert previous == 3
    store.set_alias("cost", "", "staging", 3)
    listed = {(a.name, a.version) for a in store.list_aliases("cost")}
    assert listed == {("production", 2), ("staging", 3)}
    with pytest.raises(NotFoundError, match="no version 9"):
        store.set_alias("cost", "", "production", 9)
    with pytest.raises(InvalidArgumentError, match="invalid alias name"):
        store.set_alias("cost", "", "Prod Live", 2)
    with pytest.raises(NotFoundError, match=r"no alias 'canary'.*its aliases: production, staging"):
        store.get_vector_set("cost", alias="canary")


def test_delete_is_refused_while_aliased_and_never_reuses_numbers(store: RegistryStore) -> None:
    for seed in range(2):
        store.create_vector_set(make_vector_set(seed=seed))
    store.set_alias("cost", "", "production", 2)
    with pytest.raises(FailedPreconditionError, match="target of alias"):
        store.delete_vector_set("cost", "", 2)
    store.set_alias("cost", "", "production", 1)
    deleted = store.delete_vector_set("cost", "", 2)
    assert deleted.status == "deleted"
    with pytest.raises(NotFoundError, match="was deleted"):
        store.get_vector_set("cost", version=2, with_vectors=True)
    assert store.get_vector_set("cost").version == 1  # latest active
    with pytest.raises(FailedPreconditionError, match="is deleted"):
        store.set_alias("cost", "", "staging", 2)
    assert store.create_vector_set(make_vector_set(seed=5)).version == 3
    listed = [r.version for r in store.list_vector_sets("cost").records]
    assert listed == [1, 3]
    assert [r.version for r in store.list_vector_sets("cost", include_deleted=True).records] == [1, 2, 3]


def test_listing_filters_and_paginates(store: RegistryStore) -> None:
    for seed in range(5):
        store.create_vector_set(make_vector_set("cost", seed=seed))
    store.create_vector_set(make_vector_set("age", digest=DIGEST_B, model_name="tiny-b"))
    seen, token, pages = [], "", 0
    while True:
        page = store.list_vector_sets(dimension="cost", page_size=2, page_token=token)
        seen += [r.version for r in page.records]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert (seen, pages) == ([1, 2, 3, 4, 5], 3)
    assert [(r.dimension, r.model_name) for r in store.list_vector_sets(model="tiny-b").records] == [
        ("age", "tiny-b")
    ]
    assert len(store.list_vector_sets().records) == 6
    with pytest.raises(InvalidArgumentError, match="invalid page_token"):
        store.list_vector_sets(page_token="not-a-token")


def test_unknown_dimension_and_mismatched_poles_are_refused(store: RegistryStore) -> None:
    with pytest.raises(NotFoundError, match="unknown dimension 'spice'"):
        store.create_vector_set(make_vector_set(Dimension("spice", "mild", "hot")))
    with pytest.raises(InvalidArgumentError, match="differs from the registered one"):
        store.create_vector_set(make_vector_set(Dimension("cost", "budget", "premium")))
    with pytest.raises(InvalidArgumentError, match="invalid label key"):
        store.create_vector_set(make_vector_set(), labels={"Team Name": "x"})
    assert store.list_vector_sets().records == []


def test_corrupt_vectors_are_reported_as_data_loss_not_served(store: RegistryStore) -> None:
    store.create_vector_set(make_vector_set())
    with store.database.transaction(write=True) as cursor:
        cursor.execute("SELECT vectors FROM vector_sets WHERE version = 1")
        damaged = bytearray(cursor.fetchone()[0])
        damaged[5] ^= 0x40
        cursor.execute("UPDATE vector_sets SET vectors = %s WHERE version = 1", (bytes(damaged),))
    assert store.get_vector_set("cost", version=1).version == 1  # metadata is still readable
    with pytest.raises(DataLossError, match="failed its checksum"):
        store.get_vector_set("cost", version=1, with_vectors=True)


def test_concurrent_creates_get_distinct_consecutive_versions(database_url: str) -> None:
    """Eight writers, each with its own store (as separate replicas would be), at once."""
    stores = [open_store(database_url) for _ in range(4)]
    barrier = threading.Barrier(8)

    def create(i: int) -> int:
        barrier.wait()
        return stores[i % 4].create_vector_set(make_vector_set(seed=i), author=f"writer-{i}").version

    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(create, range(8)))
    assert sorted(versions) == list(range(1, 9))
    records = stores[0].list_vector_sets("cost").records
    assert {r.author for r in records} == {f"writer-{i}" for i in range(8)}  # nothing overwritten
    for opened in stores:
        opened.close()


def test_replicas_starting_together_migrate_once(database_url: str) -> None:
    barrier = threading.Barrier(6)

    def start() -> RegistryStore:
        barrier.wait()
        return open_store(database_url)

    with ThreadPoolExecutor(6) as pool:
        stores = list(pool.map(lambda _: start(), range(6)))
    with stores[0].database.transaction() as cursor:
        cursor.execute(
            "SELECT version FROM schema_migrations WHERE component = %s ORDER BY version", (COMPONENT,)
        )
        assert [row[0] for row in cursor.fetchall()] == [m.version for m in MIGRATIONS]
    assert len(stores[0].list_dimensions()) == 5
    for opened in stores:
        opened.close()


def test_a_schema_newer_than_the_code_is_refused(database_url: str) -> None:
    database = open_database(database_url)
    future: Callable[..., None] = lambda cursor, db: cursor.execute("CREATE TABLE later_feature (id INTEGER)")  # noqa: E731
    migrate(database, COMPONENT, [*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "from the future", future)])
    with pytest.raises(FailedPreconditionError, match="newer than this SteerLab knows"):
        RegistryStore(database)
    database.close()
