"""``steerlab keys create|list|revoke``: API keys, managed in the platform's database."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from steerlab.settings import embedded_database_url, platform_data_dir

from .principal import ROLES


def add_commands(commands: Any) -> None:
    """Register the ``keys`` group on the top-level subparsers."""
    group = commands.add_parser("keys", help="create, list and revoke API keys (for --auth keys)")
    subcommands = group.add_subparsers(dest="keys_command", required=True, parser_class=type(group))

    create = subcommands.add_parser("create", help="create a key; prints it once, as the last line")
    create.add_argument("--tenant", required=True)
    create.add_argument("--user", required=True, help="the user id the key acts for")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument(
        "--expires", type=float, metavar="DAYS", help="days until it expires (default: never)"
    )
    create.set_defaults(run=_create)

    listing = subcommands.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--tenant", default="", help="only this tenant's keys")
    listing.set_defaults(run=_list)

    revoke = subcommands.add_parser("revoke", help="revoke a key; every server refuses it within seconds")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=_revoke)

    for parser in (create, listing, revoke):
        where = parser.add_mutually_exclusive_group()
        where.add_argument("--database-url", help="postgresql://... or sqlite:///file")
        where.add_argument(
            "--data-dir", help="the data directory of `steerlab up` (default: STEERLAB_HOME/platform)"
        )


def database_url(args: argparse.Namespace) -> str:
    """The flag's database, else ``STEERLAB_DATABASE_URL``, else the one of ``steerlab up``."""
    if args.database_url:
        return str(args.database_url)
    if args.data_dir:
        return embedded_database_url(Path(args.data_dir).resolve())
    return os.environ.get("STEERLAB_DATABASE_URL") or embedded_database_url(platform_data_dir())


def _audit(method: str, record: Any) -> None:
    """The audit line of a key change made here, on stderr: by whoever runs the command."""
    import getpass
    import logging

    from .audit import audit
    from .principal import Principal

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    resource = f"key_id={record.key_id} tenant={record.tenant} user_id={record.user_id} role={record.role}"
    audit(Principal("", "", getpass.getuser(), "admin"), method, resource, "OK")


def _store(args: argparse.Namespace) -> Any:
    from steerlab.storage import open_database

    from .store import KeyStore

    return KeyStore(open_database(database_url(args)))


def _create(args: argparse.Namespace) -> None:
    store = _store(args)
    try:
        record, key = store.create(args.tenant, args.user, args.role, args.expires)
    finally:
        store.close()
    _audit("keys create", record)
    expires = record.expires_at.isoformat(timespec="seconds") if record.expires_at else "never"
    print(f"key {record.key_id}: {_holder(record)}; expires {expires}")
    print("the key is shown only now; it is stored hashed and cannot be shown again:")
    print(key)


_ROW = "{:<17} {:<8} {:<9} {:<16} {:<20} {:<25} {}"


def _list(args: argparse.Namespace) -> None:
    from datetime import UTC, datetime

    store = _store(args)
    try:
        records = store.list(args.tenant)
    finally:
        store.close()
    now = datetime.now(UTC)
    print(_ROW.format("key id", "state", "role", "tenant", "user", "created", "expires"))
    for r in records:
        expires = r.expires_at.isoformat(timespec="seconds") if r.expires_at else "never"
        created = r.created_at.isoformat(timespec="seconds")
        print(_ROW.format(r.key_id, r.state(now), r.role, r.tenant, r.user_id, created, expires))


def _revoke(args: argparse.Namespace) -> None:
    store = _store(args)
    try:
        record = store.revoke(args.key_id)
    finally:
        store.close()
    _audit("keys revoke", record)
    print(f"key {record.key_id} ({_holder(record)}) is revoked")


def _holder(record: Any) -> str:
    return f"{record.role} {record.user_id!r} of tenant {record.tenant!r}"
