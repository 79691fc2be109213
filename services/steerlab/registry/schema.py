"""The registry's tables, as versioned migrations. Append new steps; never edit applied ones."""

from __future__ import annotations

from datetime import UTC, datetime

from steerlab.steering.datasets import builtin_dimensions
from steerlab.storage import Cursor, Database, Migration
from steerlab.storage.migrations import sql_migration

COMPONENT = "registry"


def _insert_builtin_dimensions(cursor: Cursor, database: Database) -> None:
    now = database.encode_time(datetime.now(UTC))
    for dimension in builtin_dimensions():
        cursor.execute(
            "INSERT INTO dimensions (name, negative_pole, positive_pole, description, created_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
            (dimension.name, dimension.negative_pole, dimension.positive_pole, dimension.description, now),
        )


MIGRATIONS = (
    sql_migration(
        1,
        "dimensions, vector sets and aliases",
        """CREATE TABLE dimensions (
            name TEXT PRIMARY KEY,
            negative_pole TEXT NOT NULL,
            positive_pole TEXT NOT NULL,
            description TEXT NOT NULL,
            created_at {timestamp} NOT NULL)""",
        """CREATE TABLE vector_sets (
            id {id},
            dimension TEXT NOT NULL REFERENCES dimensions (name),
            model_digest TEXT NOT NULL,
            model_name TEXT NOT NULL,
            version INTEGER NOT NULL,
            status TEXT NOT NULL,
            author TEXT NOT NULL,
            labels TEXT NOT NULL,
            metadata TEXT NOT NULL,
            vectors {blob},
            vectors_sha256 TEXT NOT NULL,
            created_at {timestamp} NOT NULL,
            deleted_at {timestamp},
            UNIQUE (dimension, model_digest, version))""",
        "CREATE INDEX vector_sets_by_model ON vector_sets (model_digest)",
        """CREATE TABLE aliases (
            dimension TEXT NOT NULL,
            model_digest TEXT NOT NULL,
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            updated_at {timestamp} NOT NULL,
            updated_by TEXT NOT NULL,
            PRIMARY KEY (dimension, model_digest, name),
            FOREIGN KEY (dimension, model_digest, version)
                REFERENCES vector_sets (dimension, model_digest, version))""",
    ),
    Migration(2, "built-in dimensions", _insert_builtin_dimensions),
    sql_migration(
        3,
        "idempotency keys for created vector sets",
        "ALTER TABLE vector_sets ADD COLUMN request_id TEXT",
        "CREATE UNIQUE INDEX vector_sets_by_request ON vector_sets (dimension, model_digest, request_id)",
    ),
    sql_migration(
        4,
        "tenants: a custom dimension may belong to one tenant ('' : shared, as the built-in ones)",
        "ALTER TABLE dimensions ADD COLUMN tenant TEXT NOT NULL DEFAULT ''",
    ),
)
