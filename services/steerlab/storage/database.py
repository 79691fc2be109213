"""Database connections for PostgreSQL (psycopg 3 with a pool) and SQLite, behind one interface.

Queries are written once, with ``%s`` placeholders; the SQLite backend translates them. Write
transactions can take a transaction-scoped lock on a key (an advisory lock on PostgreSQL; on
SQLite the write transaction already holds the database's single write lock).
"""

from __future__ import annotations

import os
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit

import psycopg
import psycopg_pool

from steerlab.settings import embedded_database_url, steerlab_home
from steerlab.steering.errors import InvalidArgumentError, UnavailableError


class Cursor(Protocol):
    """The part of a DB-API cursor the stores use."""

    def execute(self, query: str, params: Sequence[Any] = ()) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class UniqueViolation(Exception):
    """An INSERT or UPDATE broke a unique constraint (either backend)."""


class Database(ABC):
    """A connection source for one database, with the few dialect differences named."""

    #: Column types that differ between the backends, for ``str.format`` in migrations.
    types: ClassVar[dict[str, str]]

    @abstractmethod
    def transaction(self, write: bool = False) -> Any:
        """Context manager yielding a :class:`Cursor` inside one transaction."""

    @abstractmethod
    def lock(self, cursor: Cursor, key: str) -> None:
        """Hold a lock on ``key`` until the surrounding write transaction ends."""

    @abstractmethod
    def encode_time(self, moment: datetime) -> Any: ...

    @abstractmethod
    def decode_time(self, value: Any) -> datetime: ...

    @abstractmethod
    def close(self) -> None: ...

    @property
    @abstractmethod
    def description(self) -> str:
        """Where the data lives, without credentials (for logs)."""


class PostgresDatabase(Database):
    types: ClassVar[dict[str, str]] = {
        "id": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "blob": "BYTEA",
        "timestamp": "TIMESTAMPTZ",
        "float": "DOUBLE PRECISION",
    }

    def __init__(self, url: str, max_connections: int = 10, connect_timeout_s: float = 10.0) -> None:
        self._url = url
        parts = urlsplit(url)
        self._description = f"postgresql://{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            timeout=connect_timeout_s,
            kwargs={"connect_timeout": max(1, int(connect_timeout_s))},
            # A connection the server closed (a restart, pg_terminate_backend) is replaced when
            # it is next taken, rather than failing the one call that drew it.
            check=psycopg_pool.ConnectionPool.check_connection,
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except psycopg_pool.PoolTimeout as exc:
            self._pool.close()
            raise UnavailableError(f"cannot connect to PostgreSQL at {self._description}: {exc}") from exc

    @property
    def description(self) -> str:
        return self._description

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[Cursor]:
        try:
            with self._pool.connection() as connection, connection.cursor() as cursor:
                yield _PostgresCursor(cursor)
        except psycopg.errors.UniqueViolation as exc:
            raise UniqueViolation(str(exc)) from exc
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise UnavailableError(f"PostgreSQL at {self._description} is unavailable: {exc}") from exc

    def lock(self, cursor: Cursor, key: str) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))

    def encode_time(self, moment: datetime) -> Any:
        return moment

    def decode_time(self, value: Any) -> datetime:
        assert isinstance(value, datetime)
        return value.astimezone(UTC)

    def close(self) -> None:
        self._pool.close()


def checked_params(params: Sequence[Any]) -> tuple[Any, ...]:
    """``params`` if both backends store them alike: PostgreSQL refuses a NUL character in text
    that SQLite keeps, and SQLite overflows on an integer beyond 64 bits that PostgreSQL takes;
    both are refused here, the same way on either backend."""
    for value in params:
        if isinstance(value, str) and "\x00" in value:
            raise InvalidArgumentError(
                "a text value contains a NUL character (\\x00), which SteerLab does not store"
            )
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            raise InvalidArgumentError(f"the number {str(value)[:30]}... is outside the 64-bit range")
    return tuple(params)


class _PostgresCursor:
    """Checks parameters as SQLite's cursor does (:func:`checked_params`)."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    def execute(self, query: str, params: Sequence[Any] = ()) -> Any:
        return self._cursor.execute(query, checked_params(params))

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()


class _SqliteCursor:
    """Translates ``%s`` placeholders to SQLite's ``?``."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    def execute(self, query: str, params: Sequence[Any] = ()) -> Any:
        return self._cursor.execute(query.replace("%s", "?"), checked_params(params))

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()


class SqliteDatabase(Database):
    types: ClassVar[dict[str, str]] = {
        "id": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "blob": "BLOB",
        "timestamp": "TEXT",
        "float": "REAL",
    }

    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0) -> None:
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_s = busy_timeout_s
        self._use_wal()

    def _use_wal(self) -> None:
        """WAL lets readers go on while one writer commits; it is a property of the file.

        Switching to it needs the file to itself, and SQLite reports "database is locked" at
        once (without waiting) while other processes open it at the same moment, as replicas
        starting together do; so it is retried until the busy timeout.
        """
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            connection = sqlite3.connect(self._path, timeout=self._busy_timeout_s)
            try:
                connection.execute("PRAGMA journal_mode=WAL").fetchall()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise UnavailableError(f"cannot open SQLite database {self._path}: {exc}") from exc
            finally:
                connection.close()
            time.sleep(0.05)

    @property
    def description(self) -> str:
        return f"sqlite:///{self._path}"  # an absolute path gives sqlite:////...

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[Cursor]:
        # A connection per transaction: cheap for SQLite, and safe from any thread.
        try:
            connection = sqlite3.connect(self._path, timeout=self._busy_timeout_s, isolation_level=None)
        except sqlite3.OperationalError as exc:
            raise UnavailableError(f"cannot open SQLite database {self._path}: {exc}") from exc
        try:
            connection.execute("PRAGMA foreign_keys=ON")
            # IMMEDIATE takes the write lock up front, so read-then-write cannot race.
            connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield _SqliteCursor(connection.cursor())
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise UniqueViolation(str(exc)) from exc
            raise
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise UnavailableError(f"SQLite database {self._path} is busy: {exc}") from exc
            raise
        finally:
            connection.close()

    def lock(self, cursor: Cursor, key: str) -> None:
        """Nothing to do: a write transaction holds SQLite's only write lock."""

    def encode_time(self, moment: datetime) -> Any:
        return moment.astimezone(UTC).isoformat()

    def decode_time(self, value: Any) -> datetime:
        return datetime.fromisoformat(str(value))

    def close(self) -> None:
        """Nothing to do: connections live for one transaction."""


def resolve_database_url(flag: str | None = None) -> str:
    """The database to use: the flag, else ``STEERLAB_DATABASE_URL``, else the embedded default,
    one SQLite file in the SteerLab home directory shared by every service."""
    return flag or os.environ.get("STEERLAB_DATABASE_URL") or embedded_database_url(steerlab_home())


def open_database(url: str) -> Database:
    """Open ``postgresql://user@host:port/db`` or ``sqlite:///path/to/file.db``."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        return PostgresDatabase(url)
    if scheme == "sqlite":
        # As in SQLAlchemy: sqlite:///relative/file.db, sqlite:////absolute/file.db.
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise InvalidArgumentError(f"SQLite URL needs a file: sqlite:///path/to/file.db, got {url!r}")
        return SqliteDatabase(path)
    raise InvalidArgumentError(
        f"unsupported database URL {url!r}: use postgresql://user@host:port/db or sqlite:///path/to/file.db"
    )
