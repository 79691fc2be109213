"""The vector registry's data: dimensions, immutable vector set versions, and movable aliases.

One implementation over :class:`steerlab.storage.Database`, so PostgreSQL and SQLite behave
the same. A version is identified by (dimension, model weights digest, version number);
callers may name the model by the name it was loaded under or by a prefix of its digest.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import torch

from steerlab.steering.catalog import describe_model
from steerlab.steering.datasets import Dimension, check_name
from steerlab.steering.errors import (
    AlreadyExistsError,
    DataLossError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    VectorSetError,
)
from steerlab.steering.vectorset import VectorSet
from steerlab.storage import Cursor, Database, migrate, pages
from steerlab.storage.database import UniqueViolation
from steerlab.storage.requests import check_request_id

from .schema import COMPONENT, MIGRATIONS

ACTIVE = "active"
DELETED = "deleted"
LABEL_KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
MAX_TEXT_LENGTH = 1024
MAX_LABELS = 64

_DIMENSION_COLUMNS = "name, negative_pole, positive_pole, description, created_at, tenant"
_VECTOR_SET_COLUMNS = (
    "id, dimension, model_digest, model_name, version, status, author, labels, metadata,"
    " vectors_sha256, created_at, deleted_at"
)


@dataclass(frozen=True)
class DimensionRecord:
    dimension: Dimension
    created_at: datetime
    tenant: str = ""  # "": shared by every tenant


@dataclass(frozen=True)
class VectorSetRecord:
    """One stored version. ``vectors`` (raw float32 bytes) is present only when asked for."""

    id: int
    dimension: str
    model_digest: str
    model_name: str
    version: int
    status: str
    author: str
    labels: dict[str, str]
    metadata: dict[str, Any]
    vectors_sha256: str
    created_at: datetime
    deleted_at: datetime | None
    aliases: tuple[str, ...] = ()
    vectors: bytes | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """How people refer to it: ``cost v3 (smollm2-135m 1a2b3c4d5e6f)``."""
        return f"{self.dimension} v{self.version} ({describe_model(self.model_name, self.model_digest)})"

    def vector_set(self) -> VectorSet:
        """The core object, rebuilt from the stored vectors (which must have been fetched)."""
        if self.vectors is None:
            raise ValueError("this record was read without its vectors")
        model = self.metadata["model"]
        directions = torch.frombuffer(bytearray(self.vectors), dtype=torch.float32)
        try:
            return VectorSet.from_parts(
                directions.reshape(int(model["num_layers"]), int(model["hidden_size"])), self.metadata
            )
        except (VectorSetError, RuntimeError, KeyError) as exc:
            raise DataLossError(f"{self.label} is stored corrupt and cannot be served: {exc}") from exc


@dataclass(frozen=True)
class AliasRecord:
    name: str
    dimension: str
    model_digest: str
    version: int
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True)
class Page:
    records: list[VectorSetRecord]
    next_page_token: str


def _check_text(what: str, value: str) -> str:
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidArgumentError(f"{what} is {len(value)} characters long; the limit is {MAX_TEXT_LENGTH}")
    return value


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise InvalidArgumentError(f"{len(labels)} labels given; the limit is {MAX_LABELS}")
    for key, value in labels.items():
        if not LABEL_KEY_PATTERN.match(key):
            raise InvalidArgumentError(
                f"invalid label key {key!r}: use a lower-case letter, then a-z, 0-9, '_', '.' or '-'"
            )
        _check_text(f"label {key!r}", value)
    return dict(sorted(labels.items()))


def _check_dimension(dimension: Dimension) -> Dimension:
    check_name("dimension", dimension.name)
    negative, positive = dimension.negative_pole.strip(), dimension.positive_pole.strip()
    if not negative or not positive or negative == positive:
        raise InvalidArgumentError(
            f"dimension {dimension.name!r} needs two different, non-empty poles "
            f"(got {dimension.negative_pole!r} and {dimension.positive_pole!r})"
        )
    _check_text("description", dimension.description)
    _check_text("pole", negative + positive)
    return Dimension(dimension.name, negative, positive, dimension.description)


def _series_lock(dimension: str, digest: str) -> str:
    """The lock that serialises writes to one dimension-and-model series (version numbering)."""
    return f"steerlab:vector_sets:{dimension}:{digest}"


class RegistryStore:
    """Dimensions, vector set versions and aliases in one database."""

    def __init__(self, database: Database) -> None:
        self.database = database
        migrate(database, COMPONENT, MIGRATIONS)

    def close(self) -> None:
        self.database.close()

    # -- dimensions -------------------------------------------------------------------------

    def create_dimension(self, dimension: Dimension, tenant: str = "") -> DimensionRecord:
        """Register ``dimension``, shared by every tenant, or ``tenant``'s own."""
        dimension = _check_dimension(dimension)
        now = datetime.now(UTC)
        try:
            with self.database.transaction(write=True) as cursor:
                cursor.execute(
                    "INSERT INTO dimensions (name, negative_pole, positive_pole, description, created_at,"
                    " tenant) VALUES (%s, %s, %s, %s, %s, %s)",
                    (
                        dimension.name,
                        dimension.negative_pole,
                        dimension.positive_pole,
                        dimension.description,
                        self.database.encode_time(now),
                        tenant,
                    ),
                )
        except UniqueViolation:
            raise AlreadyExistsError(f"dimension {dimension.name!r} already exists") from None
        return DimensionRecord(dimension, now, tenant)

    def list_dimensions(self) -> list[DimensionRecord]:
        with self.database.transaction() as cursor:
            cursor.execute(f"SELECT {_DIMENSION_COLUMNS} FROM dimensions ORDER BY name")
            return [self._dimension_record(row) for row in cursor.fetchall()]

    def get_dimension(self, name: str) -> DimensionRecord:
        with self.database.transaction() as cursor:
            return self._get_dimension(cursor, name)

    def _get_dimension(self, cursor: Cursor, name: str) -> DimensionRecord:
        check_name("dimension", name)
        cursor.execute(
            f"SELECT {_DIMENSION_COLUMNS} FROM dimensions WHERE name = %s",
            (name,),
        )
        row = cursor.fetchone()
        if row is None:
            cursor.execute("SELECT name FROM dimensions ORDER BY name")
            known = ", ".join(r[0] for r in cursor.fetchall()) or "none"
            raise NotFoundError(f"unknown dimension {name!r}; registered dimensions: {known}")
        return self._dimension_record(row)

    def _dimension_record(self, row: Any) -> DimensionRecord:
        dimension = Dimension(row[0], row[1], row[2], row[3])
        return DimensionRecord(dimension, self.database.decode_time(row[4]), row[5])

    # -- vector sets ------------------------------------------------------------------------

    def create_vector_set(
        self,
        vector_set: VectorSet,
        author: str = "",
        labels: dict[str, str] | None = None,
        request_id: str = "",
    ) -> VectorSetRecord:
        """Store ``vector_set`` as the next version for its dimension and model.

        A non-empty ``request_id`` makes the call idempotent: a second call with the same key
        (an extraction job that ran twice, a client retrying) returns the version the first
        created instead of adding another.
        """
        labels = _check_labels(labels or {})
        _check_text("author", author)
        check_request_id(request_id)
        vectors = vector_set.directions.float().contiguous().numpy().tobytes()
        digest = vector_set.model.weights_digest
        metadata = vector_set.metadata()
        now = datetime.now(UTC)
        with self.database.transaction(write=True) as cursor:
            registered = self._get_dimension(cursor, vector_set.name).dimension
            if registered != vector_set.dimension:
                raise InvalidArgumentError(
                    f"the file's dimension {vector_set.name!r} ({vector_set.dimension.negative_pole!r} <-> "
                    f"{vector_set.dimension.positive_pole!r}) differs from the registered one "
                    f"({registered.negative_pole!r} <-> {registered.positive_pole!r})"
                )
            self.database.lock(cursor, _series_lock(vector_set.name, digest))
            if request_id:
                cursor.execute(
                    "SELECT version FROM vector_sets"
                    " WHERE dimension = %s AND model_digest = %s AND request_id = %s",
                    (vector_set.name, digest, request_id),
                )
                earlier = cursor.fetchone()
                if earlier is not None:
                    return self._fetch_version(cursor, vector_set.name, digest, int(earlier[0]), False)
            cursor.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM vector_sets"
                " WHERE dimension = %s AND model_digest = %s",
                (vector_set.name, digest),
            )
            version = int(cursor.fetchone()[0])
            cursor.execute(
                "INSERT INTO vector_sets (dimension, model_digest, model_name, version, status, author,"
                " labels, metadata, vectors, vectors_sha256, created_at, request_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " RETURNING id",
                (
                    vector_set.name,
                    digest,
                    vector_set.model_name,
                    version,
                    ACTIVE,
                    author,
                    json.dumps(labels),
                    json.dumps(metadata),
                    vectors,
                    metadata["directions_sha256"],
                    self.database.encode_time(now),
                    request_id or None,
                ),
            )
            row_id = int(cursor.fetchone()[0])
        return VectorSetRecord(
            id=row_id,
            dimension=vector_set.name,
            model_digest=digest,
            model_name=vector_set.model_name,
            version=version,
            status=ACTIVE,
            author=author,
            labels=labels,
            metadata=metadata,
            vectors_sha256=metadata["directions_sha256"],
            created_at=now,
            deleted_at=None,
        )

    def get_vector_set(
        self,
        dimension: str,
        model: str = "",
        version: int | None = None,
        alias: str | None = None,
        with_vectors: bool = False,
    ) -> VectorSetRecord:
        """One version, by number, by alias, or (with neither) the latest active one.

        With ``with_vectors`` the vectors are read and their checksum verified; a mismatch
        raises :class:`DataLossError` and nothing is returned.
        """
        with self.database.transaction() as cursor:
            digest = self._resolve_model(cursor, dimension, model)
            if alias is not None:
                version = self._alias_target(cursor, dimension, digest, alias)
            if version is None:
                cursor.execute(
                    "SELECT MAX(version) FROM vector_sets"
                    " WHERE dimension = %s AND model_digest = %s AND status = %s",
                    (dimension, digest, ACTIVE),
                )
                version = cursor.fetchone()[0]
                if version is None:
                    raise NotFoundError(f"every version of {dimension!r} on this model has been deleted")
            record = self._fetch_version(cursor, dimension, digest, version, with_vectors)
        if record.status == DELETED:
            raise NotFoundError(f"{record.label} was deleted at {record.deleted_at:%Y-%m-%d %H:%M:%S} UTC")
        if with_vectors:
            assert record.vectors is not None
            if hashlib.sha256(record.vectors).hexdigest() != record.vectors_sha256:
                raise DataLossError(
                    f"{record.label} failed its checksum: the stored vectors are corrupt "
                    "and will not be served"
                )
        return record

    def list_vector_sets(
        self,
        dimension: str = "",
        model: str = "",
        include_deleted: bool = False,
        page_size: int = 0,
        page_token: str = "",
    ) -> Page:
        """Versions oldest first, a page at a time, without their vectors."""
        size = pages.page_size(page_size)
        conditions: list[str] = ["id > %s"]
        params: list[Any] = [pages.decode_page_token(page_token) or 0]
        if dimension:
            check_name("dimension", dimension)
            conditions.append("dimension = %s")
            params.append(dimension)
        if model:
            conditions.append("(model_name = %s OR substr(model_digest, 1, %s) = %s)")
            params += [model, len(model), model]
        if not include_deleted:
            conditions.append("status = %s")
            params.append(ACTIVE)
        with self.database.transaction() as cursor:
            cursor.execute(
                f"SELECT {_VECTOR_SET_COLUMNS} FROM vector_sets WHERE {' AND '.join(conditions)}"
                " ORDER BY id LIMIT %s",
                (*params, size + 1),
            )
            rows = cursor.fetchall()
            aliases = self._aliases_by_version(cursor, dimension)
        records = [self._vector_set_record(row, aliases) for row in rows[:size]]
        token = pages.encode_page_token(records[-1].id) if len(rows) > size else ""
        return Page(records, token)

    def delete_vector_set(self, dimension: str, model: str, version: int) -> VectorSetRecord:
        """Mark a version deleted and drop its vectors; refused while an alias points to it."""
        now = datetime.now(UTC)
        with self.database.transaction(write=True) as cursor:
            record = self._lock_version(cursor, dimension, model, version)
            if record.status == DELETED:
                raise NotFoundError(f"{record.label} was already deleted")
            if record.aliases:
                raise FailedPreconditionError(
                    f"{record.label} is the target of alias(es) {', '.join(record.aliases)}; "
                    "move them to another version first"
                )
            cursor.execute(
                "UPDATE vector_sets SET status = %s, vectors = NULL, deleted_at = %s WHERE id = %s",
                (DELETED, self.database.encode_time(now), record.id),
            )
        return replace(record, status=DELETED, deleted_at=now)

    # -- aliases ----------------------------------------------------------------------------

    def set_alias(
        self, dimension: str, model: str, alias: str, version: int, updated_by: str = ""
    ) -> tuple[AliasRecord, int]:
        """Point ``alias`` at ``version`` atomically; return it and the version it left (0: new)."""
        check_name("alias", alias)
        _check_text("updated_by", updated_by)
        now = datetime.now(UTC)
        with self.database.transaction(write=True) as cursor:
            target = self._lock_version(cursor, dimension, model, version)
            if target.status == DELETED:
                raise FailedPreconditionError(f"{target.label} is deleted; an alias cannot point to it")
            digest = target.model_digest
            previous = self._alias_version(cursor, dimension, digest, alias) or 0
            cursor.execute(
                "INSERT INTO aliases (dimension, model_digest, name, version, updated_at, updated_by)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (dimension, model_digest, name)"
                " DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at,"
                " updated_by = excluded.updated_by",
                (dimension, digest, alias, version, self.database.encode_time(now), updated_by),
            )
        return AliasRecord(alias, dimension, digest, version, now, updated_by), previous

    def list_aliases(self, dimension: str = "", model: str = "") -> list[AliasRecord]:
        conditions: list[str] = ["1 = 1"]
        params: list[Any] = []
        with self.database.transaction() as cursor:
            if dimension:
                self._get_dimension(cursor, dimension)
                conditions.append("dimension = %s")
                params.append(dimension)
                if model:
                    conditions.append("model_digest = %s")
                    params.append(self._resolve_model(cursor, dimension, model))
            elif model:
                raise InvalidArgumentError("filtering aliases by model needs a dimension too")
            cursor.execute(
                "SELECT name, dimension, model_digest, version, updated_at, updated_by FROM aliases"
                f" WHERE {' AND '.join(conditions)} ORDER BY dimension, model_digest, name",
                params,
            )
            rows = cursor.fetchall()
        return [AliasRecord(r[0], r[1], r[2], int(r[3]), self.database.decode_time(r[4]), r[5]) for r in rows]

    # -- helpers ----------------------------------------------------------------------------

    def _resolve_model(self, cursor: Cursor, dimension: str, model: str) -> str:
        """The weights digest that ``model`` (a name, a digest prefix, or empty) names."""
        self._get_dimension(cursor, dimension)
        cursor.execute(
            "SELECT DISTINCT model_digest, model_name FROM vector_sets"
            " WHERE dimension = %s ORDER BY model_digest",
            (dimension,),
        )
        candidates = [(str(r[0]), str(r[1])) for r in cursor.fetchall()]
        matches = sorted(
            {digest for digest, name in candidates if not model or model == name or digest.startswith(model)}
        )
        if len(matches) == 1:
            return matches[0]
        known = "; ".join(describe_model(name, digest) for digest, name in candidates) or "none"
        if not matches:
            raise NotFoundError(
                f"no vector sets of {dimension!r}"
                + (f" for model {model!r}" if model else "")
                + f"; models with {dimension!r} vector sets: {known}"
            )
        raise InvalidArgumentError(
            f"{dimension!r} has vector sets for several models ({known}); "
            "name one by its name or a longer prefix of its digest"
        )

    def _lock_version(self, cursor: Cursor, dimension: str, model: str, version: int) -> VectorSetRecord:
        """Resolve the model, lock its series for this write transaction, and read the version."""
        digest = self._resolve_model(cursor, dimension, model)
        self.database.lock(cursor, _series_lock(dimension, digest))
        return self._fetch_version(cursor, dimension, digest, version, with_vectors=False)

    def _alias_version(self, cursor: Cursor, dimension: str, digest: str, alias: str) -> int | None:
        cursor.execute(
            "SELECT version FROM aliases WHERE dimension = %s AND model_digest = %s AND name = %s",
            (dimension, digest, alias),
        )
        row = cursor.fetchone()
        return int(row[0]) if row else None

    def _alias_target(self, cursor: Cursor, dimension: str, digest: str, alias: str) -> int:
        check_name("alias", alias)
        version = self._alias_version(cursor, dimension, digest, alias)
        if version is None:
            cursor.execute(
                "SELECT name FROM aliases WHERE dimension = %s AND model_digest = %s ORDER BY name",
                (dimension, digest),
            )
            known = ", ".join(r[0] for r in cursor.fetchall()) or "none"
            raise NotFoundError(f"no alias {alias!r} for {dimension!r} on this model; its aliases: {known}")
        return version

    def _fetch_version(
        self, cursor: Cursor, dimension: str, digest: str, version: int, with_vectors: bool
    ) -> VectorSetRecord:
        columns = _VECTOR_SET_COLUMNS + (", vectors" if with_vectors else "")
        cursor.execute(
            f"SELECT {columns} FROM vector_sets WHERE dimension = %s AND model_digest = %s AND version = %s",
            (dimension, digest, version),
        )
        row = cursor.fetchone()
        if row is None:
            cursor.execute(
                "SELECT MAX(version) FROM vector_sets WHERE dimension = %s AND model_digest = %s",
                (dimension, digest),
            )
            latest = cursor.fetchone()[0]
            raise NotFoundError(f"{dimension!r} has no version {version} on this model (latest: {latest})")
        return self._vector_set_record(row, self._aliases_by_version(cursor, dimension))

    def _aliases_by_version(self, cursor: Cursor, dimension: str) -> dict[tuple[str, str, int], list[str]]:
        query, params = "SELECT dimension, model_digest, version, name FROM aliases", []
        if dimension:
            query, params = query + " WHERE dimension = %s", [dimension]
        cursor.execute(query + " ORDER BY name", params)
        grouped: dict[tuple[str, str, int], list[str]] = {}
        for dim, digest, version, name in cursor.fetchall():
            grouped.setdefault((dim, digest, int(version)), []).append(name)
        return grouped

    def _vector_set_record(self, row: Any, aliases: dict[tuple[str, str, int], list[str]]) -> VectorSetRecord:
        vectors = bytes(row[12]) if len(row) > 12 and row[12] is not None else None
        return VectorSetRecord(
            id=int(row[0]),
            dimension=row[1],
            model_digest=row[2],
            model_name=row[3],
            version=int(row[4]),
            status=row[5],
            author=row[6],
            labels=json.loads(row[7]),
            metadata=json.loads(row[8]),
            vectors_sha256=row[9],
            created_at=self.database.decode_time(row[10]),
            deleted_at=self.database.decode_time(row[11]) if row[11] is not None else None,
            aliases=tuple(aliases.get((row[1], row[2], int(row[4])), ())),
            vectors=vectors,
        )
