"""``steerlab inference serve``."""

from __future__ import annotations

import argparse
from typing import Any

from steerlab.cli_options import add_serve_command, server_flags


def add_commands(commands: Any) -> None:
    """Register the ``inference`` command group on the top-level subparsers."""
    serve = add_serve_command(commands, "inference", "run the steered inference service", database=False)
    serve.add_argument(
        "--model", help="built-in model name or local Hugging Face directory (default smollm2-135m)"
    )
    serve.add_argument(
        "--registry",
        help="registry HOST:PORT for vector sets (default: $STEERLAB_REGISTRY or localhost:50051)",
    )
    serve.add_argument("--sessions", help="session service HOST:PORT, for requests that name a session")
    serve.add_argument(
        "--tensor-parallel", type=int, help="split the model over N ranks with DeepSpeed AutoTP (default 1)"
    )
    serve.add_argument("--max-batch", type=int, help="most requests decoded together (default 32)")
    serve.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> None:
    from steerlab.inference.server import InferenceSettings, build_inference_server
    from steerlab.serving.server import serve_from_command_line

    settings = InferenceSettings.from_env(
        model=args.model,
        registry=args.registry,
        sessions=args.sessions,
        tensor_parallel=args.tensor_parallel,
        max_batch=args.max_batch,
        **server_flags(args),
    )
    served = build_inference_server(settings, start_engine=False)
    try:
        details = f"model {settings.model}; {settings.describe_vectors()}"
        serve_from_command_line(served.server, "inference", details, foreground=served.engine)
    finally:
        served.close()
