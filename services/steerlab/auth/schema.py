"""The API keys' table, as versioned migrations. Append new steps; never edit applied ones."""

from __future__ import annotations

from steerlab.storage.migrations import sql_migration

COMPONENT = "auth"

MIGRATIONS = (
    sql_migration(
        1,
        "API keys, stored as a SHA-256 of their secret",
        """CREATE TABLE api_keys (
            key_id TEXT PRIMARY KEY,
            secret_sha256 TEXT NOT NULL,
            tenant TEXT NOT NULL,
            user_id TEXT NOT NULL,
            role TEXT NOT NULL,
            created_at {timestamp} NOT NULL,
            expires_at {timestamp},
            revoked_at {timestamp})""",
    ),
)
