"""Versioned schema migrations, safe when several replicas start at once.

Each component (``registry``, ``sessions``, ...) owns a numbered series of migrations. The
runner applies the missing ones inside one write transaction that holds a lock, so replicas
that start together take turns: the first applies, the others find nothing left to do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from steerlab.steering.errors import FailedPreconditionError

from .database import Cursor, Database


@dataclass(frozen=True)
class Migration:
    """One schema step. ``apply`` runs inside the runner's transaction."""

    version: int
    name: str
    apply: Callable[[Cursor, Database], None]


def sql_migration(version: int, name: str, *statements: str) -> Migration:
    """A migration made of SQL statements; ``{id}``, ``{blob}``, ``{timestamp}`` become dialect types."""

    def apply(cursor: Cursor, database: Database) -> None:
        for statement in statements:
            cursor.execute(statement.format(**database.types))

    return Migration(version, name, apply)


def migrate(database: Database, component: str, migrations: Sequence[Migration]) -> list[int]:
    """Bring ``component``'s schema up to date; return the versions applied now."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"{component} migrations must be numbered 1..n in order, got {versions}")
    with database.transaction(write=True) as cursor:
        database.lock(cursor, "steerlab:migrations")
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " component TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL,"
            " applied_at {timestamp} NOT NULL, PRIMARY KEY (component, version))".format(**database.types)
        )
        cursor.execute("SELECT version FROM schema_migrations WHERE component = %s", (component,))
        applied = {int(row[0]) for row in cursor.fetchall()}
        newer = sorted(v for v in applied if v > len(migrations))
        if newer:
            raise FailedPreconditionError(
                f"the {component} schema in {database.description} is at version {max(newer)}, newer than "
                f"this SteerLab knows ({len(migrations)}); upgrade SteerLab before serving it"
            )
        done = []
        for migration in migrations:
            if migration.version in applied:
                continue
            migration.apply(cursor, database)
            cursor.execute(
                "INSERT INTO schema_migrations (component, version, name, applied_at)"
                " VALUES (%s, %s, %s, %s)",
                (component, migration.version, migration.name, database.encode_time(datetime.now(UTC))),
            )
            done.append(migration.version)
    return done
