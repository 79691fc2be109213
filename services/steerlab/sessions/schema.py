"""The session service's tables, as versioned migrations. Append new steps; never edit applied ones."""

from __future__ import annotations

from steerlab.storage.migrations import sql_migration

COMPONENT = "sessions"

MIGRATIONS = (
    sql_migration(
        1,
        "sessions and turns",
        """CREATE TABLE sessions (
            seq {id},
            id TEXT NOT NULL UNIQUE,
            tenant TEXT NOT NULL,
            user_id TEXT NOT NULL,
            model TEXT NOT NULL,
            mode TEXT NOT NULL,
            strengths TEXT NOT NULL,
            learning_rate {float} NOT NULL,
            calibration TEXT,
            revision INTEGER NOT NULL,
            turn_count INTEGER NOT NULL,
            created_at {timestamp} NOT NULL,
            updated_at {timestamp} NOT NULL)""",
        "CREATE INDEX sessions_by_user ON sessions (tenant, user_id, seq)",
        """CREATE TABLE turns (
            session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            role TEXT NOT NULL,
            text TEXT NOT NULL,
            steering TEXT NOT NULL,
            rating TEXT,
            preference_update TEXT,
            created_at {timestamp} NOT NULL,
            PRIMARY KEY (session_id, idx))""",
    ),
    sql_migration(
        2,
        "request ids: idempotent session creation, turns and changes",
        "ALTER TABLE sessions ADD COLUMN request_id TEXT",
        "ALTER TABLE sessions ADD COLUMN last_request_id TEXT",
        "CREATE UNIQUE INDEX sessions_by_request ON sessions (tenant, user_id, request_id)",
        "ALTER TABLE turns ADD COLUMN request_id TEXT",
        "CREATE UNIQUE INDEX turns_by_request ON turns (session_id, request_id)",
    ),
)
