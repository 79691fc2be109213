"""Command-line options that several commands share."""

from __future__ import annotations

import argparse
import os
from typing import Any


def add_address_option(
    parser: argparse.ArgumentParser, flag: str, variable: str, default: str, what: str
) -> None:
    """``--registry`` / ``--server``: a service's HOST:PORT, from the flag, ``$variable`` or ``default``."""
    parser.add_argument(
        flag,
        default=os.environ.get(variable, default),
        help=f"{what} HOST:PORT (default: ${variable} or {default})",
    )


def add_extraction_options(parser: argparse.ArgumentParser) -> None:
    """``--method --top-k --site --token-selection --num-tokens --perplexity-bound --seed``,
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
        "--perplexity-bound", type=float, default=defaults.perplexity_bound, help="functional range bound"
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
        "seed": args.seed,
    }
