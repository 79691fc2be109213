"""API keys in PostgreSQL or SQLite: created, listed, revoked, and checked on every call.

A key reads ``slk_<key id>_<secret>``. The key id is public (listed, logged, revoked by); the
secret is 32 random bytes and only its SHA-256 is stored: with that much entropy a plain hash
cannot be reversed, and a database dump gives no usable key. A slow password hash would only
slow every call down.

Checks are cached for ``cache_s`` seconds, so a revoked or expired key is refused on every
replica within that time plus one database read.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from steerlab.steering.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    UnauthenticatedError,
)
from steerlab.storage import Database
from steerlab.storage.migrations import migrate
from steerlab.storage.requests import check_identifier

from .principal import KEY_PREFIX, Principal, check_role
from .schema import COMPONENT, MIGRATIONS

# Key ids are hex when SteerLab makes them; any 16 of [0-9a-z] when a deployment does (Helm).
_KEY = re.compile(r"^slk_(?P<key_id>[0-9a-z]{16})_(?P<secret>[A-Za-z0-9_-]{43})$")
_COLUMNS = "key_id, secret_sha256, tenant, user_id, role, created_at, expires_at, revoked_at"


@dataclass(frozen=True)
class KeyRecord:
    """A stored key, without its secret."""

    key_id: str
    tenant: str
    user_id: str
    role: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    @property
    def principal(self) -> Principal:
        return Principal(self.key_id, self.tenant, self.user_id, self.role)


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    """The keys of one database (the platform's). Opening it applies the table's migrations."""

    def __init__(self, database: Database, cache_s: float = 2.0) -> None:
        self.database = database
        self.cache_s = cache_s
        self._checked: dict[str, tuple[float, KeyRecord, str]] = {}
        self._lock = threading.Lock()
        migrate(database, COMPONENT, MIGRATIONS)

    def close(self) -> None:
        self.database.close()

    def create(
        self, tenant: str, user_id: str, role: str, expires_in_days: float | None = None
    ) -> tuple[KeyRecord, str]:
        """A new key for ``user_id`` of ``tenant``; returns its record and the key itself, which
        is shown once and never stored."""
        check_identifier("tenant", tenant)
        check_identifier("user", user_id)
        check_role(role)
        if expires_in_days is not None and expires_in_days <= 0:
            raise InvalidArgumentError(f"a key must expire in more than 0 days, got {expires_in_days}")
        now = datetime.now(UTC)
        expires = now + timedelta(days=expires_in_days) if expires_in_days is not None else None
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        record = KeyRecord(key_id, tenant, user_id, role, now, expires, None)
        with self.database.transaction(write=True) as cursor:
            self._insert(cursor, record, secret)
        return record, f"{KEY_PREFIX}{key_id}_{secret}"

    def register(self, key: str, tenant: str, user_id: str, role: str) -> KeyRecord:
        """Store a key made elsewhere (a deployment's generated Secret), unless it is stored
        already; a different key under the same id is refused."""
        match = _KEY.match(key)
        if match is None:
            raise InvalidArgumentError("not a SteerLab API key (slk_<16 of 0-9a-z>_<43 of A-Za-z0-9_->)")
        check_identifier("tenant", tenant)
        check_identifier("user", user_id)
        check_role(role)
        record = KeyRecord(match["key_id"], tenant, user_id, role, datetime.now(UTC), None, None)
        with self.database.transaction(write=True) as cursor:
            cursor.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = %s", (record.key_id,))
            row = cursor.fetchone()
            if row is None:
                self._insert(cursor, record, match["secret"])
                return record
        stored, digest = self._record(row)
        if not hmac.compare_digest(digest, _sha256(match["secret"])):
            raise AlreadyExistsError(f"another key has the id {record.key_id}")
        return stored

    def _insert(self, cursor: Any, record: KeyRecord, secret: str) -> None:
        encode = self.database.encode_time
        cursor.execute(
            f"INSERT INTO api_keys ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                record.key_id,
                _sha256(secret),
                record.tenant,
                record.user_id,
                record.role,
                encode(record.created_at),
                encode(record.expires_at) if record.expires_at else None,
                None,
            ),
        )

    def list(self, tenant: str = "") -> list[KeyRecord]:
        """Every key (of ``tenant``), oldest first."""
        query = f"SELECT {_COLUMNS} FROM api_keys"
        params: tuple[str, ...] = ()
        if tenant:
            query, params = query + " WHERE tenant = %s", (tenant,)
        with self.database.transaction() as cursor:
            cursor.execute(query + " ORDER BY created_at, key_id", params)
            return [self._record(row)[0] for row in cursor.fetchall()]

    def revoke(self, key_id: str) -> KeyRecord:
        """Revoke a key; every replica refuses it within ``cache_s`` seconds. Revoking twice is harmless."""
        now = datetime.now(UTC)
        with self.database.transaction(write=True) as cursor:
            cursor.execute(
                "UPDATE api_keys SET revoked_at = %s WHERE key_id = %s AND revoked_at IS NULL",
                (self.database.encode_time(now), key_id),
            )
            cursor.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = %s", (key_id,))
            row = cursor.fetchone()
        if row is None:
            raise NotFoundError(f"no key {key_id!r}")
        return self._record(row)[0]

    def change_counts(self) -> tuple[tuple[str, int, int], ...]:
        """``(tenant, keys created, keys revoked)`` per tenant: every key change ever made, by
        any process (the CLI included), as the database records it."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "SELECT tenant, COUNT(*), COUNT(revoked_at) FROM api_keys GROUP BY tenant ORDER BY tenant"
            )
            rows = cursor.fetchall()
        return tuple((str(tenant), int(created), int(revoked)) for tenant, created, revoked in rows)

    def authenticate(self, key: str) -> Principal:
        """The principal ``key`` stands for; :class:`UnauthenticatedError` if it is malformed,
        unknown, revoked or expired."""
        match = _KEY.match(key)
        if match is None:
            raise UnauthenticatedError("not a SteerLab API key (slk_...)")
        record, digest = self._lookup(match["key_id"])
        if record is None or not hmac.compare_digest(digest, _sha256(match["secret"])):
            raise UnauthenticatedError("unknown API key")
        state = record.state(datetime.now(UTC))
        if state != "active":
            raise UnauthenticatedError(f"API key {record.key_id} is {state}")
        return replace(record.principal, credential=key)

    def _lookup(self, key_id: str) -> tuple[KeyRecord | None, str]:
        with self._lock:
            cached = self._checked.get(key_id)
        if cached is not None and time.monotonic() - cached[0] < self.cache_s:
            return cached[1], cached[2]
        with self.database.transaction() as cursor:
            cursor.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = %s", (key_id,))
            row = cursor.fetchone()
        if row is None:
            return None, ""
        record, digest = self._record(row)
        with self._lock:
            self._checked[key_id] = (time.monotonic(), record, digest)
        return record, digest

    def _record(self, row: Any) -> tuple[KeyRecord, str]:
        key_id, digest, tenant, user_id, role, created, expires, revoked = row
        decode = self.database.decode_time
        record = KeyRecord(
            key_id,
            tenant,
            user_id,
            role,
            decode(created),
            decode(expires) if expires is not None else None,
            decode(revoked) if revoked is not None else None,
        )
        return record, digest
