"""``steerlab sessions serve``."""

from __future__ import annotations

import argparse
from typing import Any

from steerlab.cli_options import add_serve_command, server_flags


def add_commands(commands: Any) -> None:
    """Register the ``sessions`` command group on the top-level subparsers."""
    serve = add_serve_command(commands, "sessions", "run the preference and session service")
    serve.add_argument(
        "--registry", help="registry HOST:PORT whose dimensions sessions use (default: the built-in five)"
    )
    serve.add_argument(
        "--learn-method",
        choices=("intent", "paper"),
        help="how LEARN reads replies: intent (default) or the paper's formulation (STEERLAB_LEARN_METHOD)",
    )
    serve.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> None:
    from steerlab.serving.server import serve_from_command_line
    from steerlab.sessions.server import SessionSettings, build_session_server

    settings = SessionSettings.from_env(
        database_url=args.database_url,
        registry=args.registry,
        learn_method=args.learn_method,
        **server_flags(args),
    )
    server, manager = build_session_server(settings)
    try:
        serve_from_command_line(server, "sessions", f"database {manager.store.database.description}")
    finally:
        manager.store.close()
