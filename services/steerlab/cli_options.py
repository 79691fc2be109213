"""Command-line options that several commands share."""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

from .settings import AUTH_MODES, DEFAULT_PORTS, SERVER_FLAGS

_LABEL = re.compile(r"^(?P<key>[^=]+)=(?P<value>.*)$")


def add_address_option(
    parser: argparse.ArgumentParser, flag: str, variable: str, default: str, what: str
) -> None:
    """``--registry`` / ``--server``: a service's HOST:PORT, from the flag, ``$variable`` or ``default``."""
    parser.add_argument(
        flag,
        default=os.environ.get(variable, default),
        help=f"{what} HOST:PORT (default: ${variable} or {default})",
    )
    add_tls_ca_option(parser)


def add_tls_ca_option(parser: argparse.ArgumentParser) -> None:
    """``--tls-ca``: reach the server over TLS, trusting this CA (or ``system``: the system's roots)."""
    parser.add_argument(
        "--tls-ca",
        default=os.environ.get("STEERLAB_TLS_CA", ""),
        help="use TLS, trusting this PEM CA file, or 'system' for the system's roots "
        "(default: $STEERLAB_TLS_CA; none: plaintext)",
    )


def client_tls(args: argparse.Namespace) -> Any:
    """The SDK's :class:`~steerlab_client.Tls` for ``--tls-ca`` (the client certificate, for mutual
    TLS, comes from ``STEERLAB_TLS_CLIENT_CERT`` and ``STEERLAB_TLS_CLIENT_KEY``)."""
    from dataclasses import replace

    from steerlab_client import Tls

    return replace(Tls.from_env(), ca=args.tls_ca)


def add_extraction_options(parser: argparse.ArgumentParser) -> None:
    """``--method --top-k --site --token-selection --num-tokens --perplexity-bound
    --repetition-bound --seed``,
    with the core's defaults (``steerlab extract`` and ``steerlab jobs submit``)."""
    from .steering import METHODS, SITES, ExtractionConfig

    defaults = ExtractionConfig()
    parser.add_argument("--method", choices=METHODS, default=defaults.method)
    parser.add_argument("--top-k", type=int, help="layers to steer (default: 3/4 of the depth)")
    parser.add_argument("--site", choices=SITES, default=defaults.site, help="activation site")
    parser.add_argument(
        "--token-selection", choices=("first", "last", "mean"), default=defaults.token_selection
    )
    parser.add_argument(
        "--num-tokens", type=int, default=defaults.num_tokens, help="completion tokens per example"
    )
    parser.add_argument(
        "--perplexity-bound",
        type=float,
        default=defaults.perplexity_bound,
        help="functional range: held-out perplexity at most this times unsteered",
    )
    parser.add_argument(
        "--repetition-bound",
        type=float,
        default=defaults.repetition_bound,
        help="functional range: sampled answers' repeated-4-gram rate at most this times unsteered",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)


def extraction_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The options of :func:`add_extraction_options` as ``ExtractionConfig`` keyword arguments."""
    return {
        "method": args.method,
        "site": args.site,
        "token_selection": args.token_selection,
        "num_tokens": args.num_tokens,
        "top_k": args.top_k,
        "perplexity_bound": args.perplexity_bound,
        "repetition_bound": args.repetition_bound,
        "seed": args.seed,
    }


def add_serve_command(commands: Any, service: str, help_text: str, database: bool = True) -> Any:
    """``steerlab <service> serve`` with the options every service takes (``--database-url``
    only for one that keeps a database); returns its parser."""
    return add_service_commands(commands, service, help_text, database)[0]


def add_service_commands(
    commands: Any, service: str, help_text: str, database: bool = True
) -> tuple[Any, Any]:
    """Like :func:`add_serve_command`; also returns the group's subparsers, for commands beside serve."""
    port, metrics_port = DEFAULT_PORTS[service]
    group = commands.add_parser(service, help=help_text)
    subcommands = group.add_subparsers(dest=f"{service}_command", required=True, parser_class=type(group))
    serve = subcommands.add_parser("serve", help=f"serve the {service} service over gRPC until interrupted")
    if database:
        serve.add_argument(
            "--database-url", help="postgresql://... or sqlite:///file (default: SQLite in STEERLAB_HOME)"
        )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help=f"gRPC port (default {port})")
    serve.add_argument("--metrics-port", type=int, help=f"Prometheus /metrics port (default {metrics_port})")
    add_auth_option(serve)
    return serve, subcommands


def add_auth_option(parser: argparse.ArgumentParser) -> None:
    """``--auth none|token|keys`` and the TLS files of every command that serves."""
    parser.add_argument(
        "--health-port",
        type=int,
        help="also serve health checks alone, in plaintext, on this port (for probes without TLS)",
    )
    parser.add_argument("--tls-cert", help="PEM certificate chain: serve TLS (default: $STEERLAB_TLS_CERT)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert (default: $STEERLAB_TLS_KEY)")
    parser.add_argument(
        "--tls-client-ca",
        help="PEM CA: mutual TLS, clients need a certificate it signed (default: $STEERLAB_TLS_CLIENT_CA)",
    )
    parser.add_argument(
        "--auth",
        choices=AUTH_MODES,
        help="who may call: none, token (STEERLAB_TOKEN) or keys (API keys, `steerlab keys`); "
        "default: STEERLAB_AUTH, else token when STEERLAB_TOKEN is set, else none",
    )


def server_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The flags every serving command shares, as settings keyword arguments (None: not given)."""
    return {name: getattr(args, name) for name in SERVER_FLAGS}


def parse_labels(values: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` options as a dict."""
    labels = {}
    for value in values:
        match = _LABEL.match(value)
        if not match:
            raise ValueError(f"--label {value!r} is not KEY=VALUE")
        labels[match["key"]] = match["value"]
    return labels
