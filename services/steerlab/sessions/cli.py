"""``steerlab sessions serve``."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(commands: Any) -> None:
    """Register the ``sessions`` command group on the top-level subparsers."""
    sessions = commands.add_parser("sessions", help="run the preference and session service")
    session_commands = sessions.add_subparsers(
        dest="sessions_command", required=True, parser_class=type(sessions)
    )
    serve = session_commands.add_parser("serve", help="serve sessions over gRPC until interrupted")
    serve.add_argument(
        "--database-url", help="postgresql://... or sqlite:///file (default: SQLite in STEERLAB_HOME)"
    )
    serve.add_argument(
        "--registry", help="registry HOST:PORT whose dimensions sessions use (default: the built-in five)"
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="gRPC port (default 50052)")
    serve.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (default 9465)")
    serve.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> None:
    from steerlab.serving.server import serve_from_command_line
    from steerlab.sessions.server import SessionSettings, build_session_server

    settings = SessionSettings.from_env(
        args.database_url, args.registry, args.host, args.port, args.metrics_port
    )
    server, manager = build_session_server(settings)
    try:
        serve_from_command_line(server, "sessions", manager.store.database.description)
    finally:
        manager.store.close()
