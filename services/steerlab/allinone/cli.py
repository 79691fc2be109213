"""``steerlab up``."""

from __future__ import annotations

import argparse
from typing import Any

from steerlab.cli_options import add_auth_option, server_flags
from steerlab.settings import DEFAULT_PORTS


def add_commands(commands: Any) -> None:
    """Register ``steerlab up`` on the top-level subparsers."""
    port, metrics_port = DEFAULT_PORTS["up"]
    up = commands.add_parser(
        "up",
        help="run the whole platform in one process on one port (embedded stores, in-process worker)",
    )
    up.add_argument(
        "--model", help="built-in model name or local Hugging Face directory (default smollm2-135m)"
    )
    up.add_argument("--port", type=int, help=f"gRPC port for every service (default {port}; 0: any)")
    up.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    up.add_argument("--metrics-port", type=int, help=f"Prometheus /metrics port (default {metrics_port})")
    up.add_argument("--data-dir", help="where the embedded database lives (default STEERLAB_HOME/platform)")
    up.add_argument("--database-url", help="postgresql://... instead of SQLite in --data-dir")
    up.add_argument("--max-batch", type=int, help="most requests decoded together (default 32)")
    up.add_argument(
        "--learn-method",
        choices=("intent", "paper"),
        help="how LEARN reads replies: intent (default) or the paper's formulation (STEERLAB_LEARN_METHOD)",
    )
    add_auth_option(up)
    up.set_defaults(run=_up)


def _up(args: argparse.Namespace) -> None:
    import logging

    from steerlab.serving.server import serve_from_command_line

    from .server import PlatformSettings, build_platform, ensure_builtin_dimensions

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = PlatformSettings.from_env(
        model=args.model,
        data_dir=args.data_dir,
        database_url=args.database_url,
        max_batch=args.max_batch,
        learn_method=args.learn_method,
        **server_flags(args),
    )
    print(f"steerlab up: loading {settings.model} and the services ...", flush=True)
    platform = build_platform(settings)
    try:
        platform.jobs.start_background()
        # The extraction jobs register through the registry API on this server's own port, so
        # they run once it listens, before the line that says the platform is ready.
        serve_from_command_line(
            platform.server,
            "up",
            platform.describe(),
            foreground=platform.inference.engine,
            prepare=lambda: ensure_builtin_dimensions(
                platform, say=lambda line: print(f"steerlab up: {line}", flush=True)
            ),
        )
    finally:
        platform.close()
