"""The job records' table, as versioned migrations. Append new steps; never edit applied ones."""

from __future__ import annotations

from steerlab.storage.migrations import sql_migration

COMPONENT = "jobs"

MIGRATIONS = (
    sql_migration(
        1,
        "extraction jobs",
        """CREATE TABLE jobs (
            seq {id},
            job_id TEXT NOT NULL UNIQUE,
            state TEXT NOT NULL,
            dimension TEXT NOT NULL,
            model TEXT NOT NULL,
            spec TEXT NOT NULL,
            stage TEXT NOT NULL,
            percent {float} NOT NULL,
            message TEXT NOT NULL,
            result TEXT,
            error TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            cancel_requested INTEGER NOT NULL,
            lease_until {timestamp},
            created_at {timestamp} NOT NULL,
            started_at {timestamp},
            finished_at {timestamp},
            updated_at {timestamp} NOT NULL)""",
        "CREATE INDEX jobs_by_state ON jobs (state, lease_until)",
    ),
    sql_migration(
        2,
        "request ids: idempotent submission",
        "ALTER TABLE jobs ADD COLUMN request_id TEXT",
        "CREATE UNIQUE INDEX jobs_by_request ON jobs (request_id)",
    ),
    sql_migration(
        3,
        "tenants: a job belongs to the tenant of the key that submitted it",
        "ALTER TABLE jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX jobs_by_tenant ON jobs (tenant, seq)",
    ),
)
