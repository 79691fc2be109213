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
    """The key store of the command's database, closed when the ``with`` block ends."""
    from contextlib import closing

    from steerlab.storage import open_database

    from .store import KeyStore

    return closing(KeyStore(open_database(database_url(args))))


def _create(args: argparse.Namespace) -> None:
    with _store(args) as store:
        record, key = store.create(args.tenant, args.user, args.role, args.expires)
    _audit("keys create", record)
    print(f"key {record.key_id}: {_holder(record)}; expires {_expiry(record)}")
    print("the key is shown only now; it is stored hashed and cannot be shown again:")
    print(key)


_ROW = "{:<17} {:<8} {:<9} {:<16} {:<20} {:<25} {}"


def _list(args: argparse.Namespace) -> None:
    from datetime import UTC, datetime

    with _store(args) as store:
        records = store.list(args.tenant)
    now = datetime.now(UTC)
    print(_ROW.format("key id", "state", "role", "tenant", "user", "created", "expires"))
    for r in records:
        created = r.created_at.isoformat(timespec="seconds")
        print(_ROW.format(r.key_id, r.state(now), r.role, r.tenant, r.user_id, created, _expiry(r)))


def _revoke(args: argparse.Namespace) -> None:
    with _store(args) as store:
        record = store.revoke(args.key_id)
    _audit("keys revoke", record)
    print(f"key {record.key_id} ({_holder(record)}) is revoked")


def _expiry(record: Any) -> str:
    return record.expires_at.isoformat(timespec="seconds") if record.expires_at else "never"


def _holder(record: Any) -> str:
    return f"{record.role} {record.user_id!r} of tenant {record.tenant!r}"
