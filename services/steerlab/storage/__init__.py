"""Relational storage shared by the services: PostgreSQL in production, SQLite embedded.

One SQL dialect-neutral interface (:class:`Database`), and versioned migrations that are safe
when several replicas start at once (:func:`migrate`).
"""

from .database import Cursor, Database, PostgresDatabase, SqliteDatabase, open_database, resolve_database_url
from .migrations import Migration, migrate

__all__ = [
    "Cursor",
    "Database",
    "Migration",
    "PostgresDatabase",
    "SqliteDatabase",
    "migrate",
    "open_database",
    "resolve_database_url",
]
