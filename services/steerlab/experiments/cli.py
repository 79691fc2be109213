"""``steerlab experiments run``: the paper's experiments from the command line."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from ..cli_options import add_extraction_options, extraction_parameters
from ..steering.datasets import BUILTIN_DIMENSIONS

CHOICES = ("e1", "e2", "e3", "e4", "all")


def add_commands(commands: Any) -> None:
    """Register the ``experiments`` group on the top-level subparsers."""
    experiments = commands.add_parser("experiments", help="reproduce the paper's experiments E1-E4")
    actions = experiments.add_subparsers(dest="action", required=True)
    run = actions.add_parser(
        "run",
        help="run E1-E4 (or one of them): CSV/JSON data, PNG plots and a Markdown report in --out",
        description="E1 strength sweep and extraction methods; E2 stated preference x steering; "
        "E3 culture and age together, cross-talk; E4 LEARN with simulated users.",
    )
    run.add_argument("experiment", choices=CHOICES)
    run.add_argument("--model", default="smollm2-135m", help="built-in model name or Hugging Face directory")
    run.add_argument("--out", required=True, type=Path, help="directory for the data, plots and report")
    run.add_argument("--quick", action="store_true", help="a small smoke run (minutes, not half an hour)")
    run.add_argument("--seed", type=int, default=0, help="seed for the simulated users and bootstrap")
    run.set_defaults(run=_run)
    learn = actions.add_parser(
        "learn",
        help="how well LEARN reads replies it has never seen: single replies, content replies, oracle users",
        description="Scores a LEARN reader on the development set (where methods and thresholds are "
        "chosen) or the test set (written separately, in another voice; report it once).",
    )
    learn.add_argument("--split", choices=("dev", "test"), default="dev")
    learn.add_argument("--method", choices=("intent", "paper"), default="intent")
    learn.add_argument("--users", type=int, default=10, help="oracle users per dimension (default 10)")
    learn.add_argument("--seed", type=int, default=0, help="seed for the oracle users' targets and replies")
    learn.add_argument("--json", type=Path, help="also write every figure, and each misread reply, here")
    learn.set_defaults(run=_learn)
    sliders = actions.add_parser(
        "sliders",
        help="does each slider move its own dimension, and only it, fluently? (sampled, two judges)",
        description="Answers the second protocol's prompts unsteered and with each built-in dimension "
        "alone at -100..+100%%, sampled with several seeds, and scores every answer with two judges on "
        "every dimension. Tune on --split dev; read --split test once.",
    )
    sliders.add_argument("--split", choices=("dev", "test"), default="dev")
    sliders.add_argument(
        "--model", default="smollm2-135m", help="built-in model name or Hugging Face directory"
    )
    add_extraction_options(sliders)
    sliders.add_argument(
        "--orthogonal", action="store_true", help="make the five directions mutually orthogonal per layer"
    )
    sliders.add_argument(
        "--dimensions",
        type=lambda text: text.split(","),
        default=list(BUILTIN_DIMENSIONS),
        help="built-in dimensions to steer, comma-separated (default: all; every answer is still "
        "scored on all five)",
    )
    sliders.add_argument("--seeds", type=int, default=3, help="sampled answers per prompt and strength")
    sliders.add_argument("--prompts", type=int, help="use only the first N prompts of the split")
    sliders.add_argument("--max-new-tokens", type=int, default=100)
    sliders.add_argument("--json", type=Path, help="also write every figure and answer here")
    sliders.set_defaults(run=_sliders)


def _run(args: argparse.Namespace) -> None:
    from .runner import EXPERIMENTS, run_experiments

    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    command = "steerlab " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    report = run_experiments(
        names, model=args.model, out=args.out, quick=args.quick, seed=args.seed, command=command
    )
    print(f"report: {report}")


def _learn(args: argparse.Namespace) -> None:
    import json

    from ..sessions.learn import make_interpreter
    from ..sessions.learn.evaluate import evaluate, format_report

    result = evaluate(make_interpreter(args.method), args.split, args.users, args.seed)
    print(format_report(result, args.method))
    if args.json:
        args.json.write_text(json.dumps({"method": args.method, **result}, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


def _sliders(args: argparse.Namespace) -> None:
    from ..steering import ExtractionConfig, load_model
    from .sliders import format_report, run_sliders, write_results

    if args.seeds < 1 or (args.prompts is not None and args.prompts < 2):
        raise SystemExit("steerlab: --seeds must be at least 1 and --prompts at least 2")
    unknown = sorted(set(args.dimensions) - set(BUILTIN_DIMENSIONS))
    if unknown or not args.dimensions:
        raise SystemExit(
            f"steerlab: --dimensions takes built-in dimensions ({', '.join(BUILTIN_DIMENSIONS)}); "
            f"unknown: {', '.join(unknown) or '(none given)'}"
        )
    results, answers, settings = run_sliders(
        load_model(args.model),
        split=args.split,
        config=ExtractionConfig(**extraction_parameters(args)),
        orthogonal=args.orthogonal,
        seeds=args.seeds,
        prompt_count=args.prompts,
        dimensions=args.dimensions,
        max_new_tokens=args.max_new_tokens,
    )
    print(format_report(results, settings))
    if args.json:
        write_results(args.json, results, answers, settings)
        print(f"wrote {args.json}")
