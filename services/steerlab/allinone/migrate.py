"""``steerlab migrate``: bring every component's schema up to date, then exit.

Each service also migrates its own tables when it starts (under a lock, so replicas take
turns); running this once before a rollout (the Helm chart's hook Job does) means the new
replicas find nothing left to do. The list of components lives here, with whoever composes the
platform, so that storage knows no service.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from steerlab.storage.database import Database
    from steerlab.storage.migrations import Migration


def add_commands(commands: Any) -> None:
    """Register ``migrate`` on the top-level subparsers."""
    parser = commands.add_parser("migrate", help="apply every component's database migrations, then exit")
    parser.add_argument(
        "--database-url",
        help="postgresql://... or sqlite:///file "
        "(default: $STEERLAB_DATABASE_URL, else SQLite in STEERLAB_HOME)",
    )
    parser.add_argument(
        "--register-service-key",
        action="store_true",
        help="also register $STEERLAB_TOKEN as the services' admin API key, unless it is already (Helm)",
    )
    parser.set_defaults(run=_migrate)


def components() -> list[tuple[str, Sequence[Migration]]]:
    """Every component that owns tables, with its migrations."""
    from steerlab.auth import schema as auth
    from steerlab.jobs import schema as jobs
    from steerlab.registry import schema as registry
    from steerlab.sessions import schema as sessions

    return [(module.COMPONENT, module.MIGRATIONS) for module in (registry, sessions, jobs, auth)]


def migrate_all(database: Database) -> dict[str, list[int]]:
    """Apply the missing migrations of every component; return the versions applied now, by component."""
    from steerlab.storage.migrations import migrate

    return {component: migrate(database, component, steps) for component, steps in components()}


SERVICE_USER = "steerlab-services"


def _register_service_key(database: Database) -> str:
    import os

    from steerlab.auth.principal import SERVICE_TENANT
    from steerlab.auth.store import KeyStore

    key = os.environ.get("STEERLAB_TOKEN", "")
    if not key:
        raise ValueError("--register-service-key needs the key in STEERLAB_TOKEN")
    record = KeyStore(database).register(key, SERVICE_TENANT, SERVICE_USER, "admin")
    return f"  service key {record.key_id}: registered (admin {SERVICE_USER!r} of {SERVICE_TENANT!r})"


def _migrate(args: argparse.Namespace) -> None:
    from steerlab.storage import open_database, resolve_database_url

    database = open_database(resolve_database_url(args.database_url))
    try:
        applied = migrate_all(database)
        registered = _register_service_key(database) if args.register_service_key else ""
    finally:
        database.close()
    print(f"migrated {database.description}")
    for component, versions in applied.items():
        done = f"applied {', '.join(map(str, versions))}" if versions else "up to date"
        print(f"  {component}: {done}")
    if registered:
        print(registered)
