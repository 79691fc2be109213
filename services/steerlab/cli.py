"""The ``steerlab`` command line."""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections.abc import Sequence
from typing import NoReturn

from .cli_options import add_extraction_options, extraction_parameters
from .inference.cli import add_commands as add_inference_commands
from .jobs.cli import add_commands as add_job_commands
from .registry.cli import add_commands as add_registry_commands
from .sessions.cli import add_commands as add_session_commands

MODEL_COMMANDS = ("extract", "generate", "demo", "inference")  # the rest stay fast: no torch, no transformers
STEER_PATTERN = re.compile(r"^(?P<name>[a-z][a-z0-9_-]*)=(?P<pct>[+-]?\d+(\.\d+)?)%?$")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_steer(values: Sequence[str]) -> dict[str, float]:
    """Parse ``NAME=PCT`` arguments (``cost=+40``, ``age=-100%``)."""
    from .steering import SteeringError, check_strength

    strengths: dict[str, float] = {}
    for value in values:
        match = STEER_PATTERN.match(value.strip())
        if not match:
            raise SteeringError(f"--steer {value!r} is not NAME=PCT, e.g. cost=+40")
        name = match["name"]
        if name in strengths:
            raise SteeringError(f"--steer names {name!r} twice")
        strengths[name] = check_strength(name, float(match["pct"]))
    return strengths


def _cmd_dimensions(args: argparse.Namespace) -> None:
    from .steering import BUILTIN_DIMENSIONS, builtin_dataset

    rows = []
    for name in BUILTIN_DIMENSIONS:
        dataset = builtin_dataset(name)
        dim = dataset.dimension
        counts = {"negative": dataset.count(dim.negative_pole), "positive": dataset.count(dim.positive_pole)}
        rows.append({**dim.to_dict(), "examples": counts})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'dimension':<10} {'negative pole':<14} {'positive pole':<14} {'examples':>9}  description")
    for row in rows:
        examples = f"{row['examples']['negative']}+{row['examples']['positive']}"
        description = textwrap.shorten(row["description"], width=70, placeholder=" ...")
        poles = f"{row['negative_pole']:<14} {row['positive_pole']:<14}"
        print(f"{row['name']:<10} {poles} {examples:>9}  {description}")


def _cmd_models(_args: argparse.Namespace) -> None:
    from .steering import BUILTIN_MODELS

    for model in BUILTIN_MODELS.values():
        print(f"{model.name:<14} {model.description}")
    print("Any local Hugging Face causal-LM directory works too: --model PATH")


def _cmd_extract(args: argparse.Namespace) -> None:
    from .steering import ExtractionConfig, builtin_dataset, extract, load_dataset, load_model

    dataset = builtin_dataset(args.dimension) if args.dimension else load_dataset(args.dataset)
    config = ExtractionConfig(**extraction_parameters(args))
    lm = load_model(args.model)
    vector_set = extract(lm, dataset, config, progress=True)
    vector_set.save(args.out)
    dim = vector_set.dimension
    print(f"dimension      {dim.name} ({dim.negative_pole} <-> {dim.positive_pole})")
    print(f"method         {vector_set.method} at site {vector_set.site!r}")
    print(f"layers         {', '.join(map(str, vector_set.selected_layers))}")
    print(f"accuracy       held-out {vector_set.heldout_accuracy:.3f} mean over selected layers")
    for score in vector_set.layer_scores:
        mark = "*" if score.layer in vector_set.selected_layers else " "
        print(
            f"  {mark} layer {score.layer:>3}  held-out {score.heldout_accuracy:.3f}  "
            f"train {score.train_accuracy:.3f}"
        )
    baseline = vector_set.functional_range.get("baseline_perplexity", float("nan"))
    print(
        f"alpha_max      {vector_set.alpha_max:.4f} "
        f"(perplexity <= {config.perplexity_bound:g}x unsteered {baseline:.2f})"
    )
    print(f"saved          {args.out}")


def _cmd_generate(args: argparse.Namespace) -> None:
    from .steering import Sampling, VectorSet, generate, load_model

    vector_sets = [VectorSet.load(path) for path in args.vectors]
    strengths = parse_steer(args.steer)
    sampling = Sampling(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
    )
    sampling.validate()  # fail before the slow model load
    lm = load_model(args.model)
    [text] = generate(
        lm,
        [args.prompt],
        vector_sets=vector_sets,
        strengths=[strengths],
        max_new_tokens=args.max_new_tokens,
        sampling=sampling,
    )
    if args.json:
        by_name = {vector_set.name: vector_set for vector_set in vector_sets}
        steering = {
            name: {
                "percent": pct,
                "alpha": by_name[name].alpha(pct),
                "alpha_max": by_name[name].alpha_max,
                "layers": list(by_name[name].selected_layers),
                "dataset_hash": by_name[name].dataset_hash,
            }
            for name, pct in strengths.items()
        }
        print(json.dumps({"text": text, "steering": steering}, ensure_ascii=False))
    else:
        print(text)


def _cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(model=args.model, prompt=args.prompt, max_new_tokens=args.max_new_tokens)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="steerlab", description="Personalise LLMs with activation steering.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    dimensions = commands.add_parser("dimensions", help="list the built-in dimensions")
    dimensions.add_argument("--json", action="store_true", help="print JSON")
    dimensions.set_defaults(run=_cmd_dimensions)

    models = commands.add_parser("models", help="list the built-in models")
    models.set_defaults(run=_cmd_models)

    extract = commands.add_parser("extract", help="extract a vector set from a dataset")
    extract.add_argument("--model", required=True, help="built-in model name or local HF directory")
    source = extract.add_mutually_exclusive_group(required=True)
    source.add_argument("--dimension", help="a built-in dimension (see `steerlab dimensions`)")
    source.add_argument("--dataset", help="a custom dataset file (JSON Lines, see README)")
    add_extraction_options(extract)
    extract.add_argument("--out", required=True, help="output .safetensors file")
    extract.set_defaults(run=_cmd_extract)

    generate = commands.add_parser("generate", help="answer a prompt with steering")
    generate.add_argument("--model", required=True)
    generate.add_argument("--vectors", action="append", default=[], help="vector set file (repeatable)")
    generate.add_argument(
        "--steer",
        action="append",
        default=[],
        metavar="NAME=PCT",
        help="strength in percent of the functional range, -100..100 (repeatable)",
    )
    generate.add_argument("--max-new-tokens", type=int, default=96)
    generate.add_argument("--seed", type=int)
    generate.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    generate.add_argument("--top-p", type=float, default=1.0)
    generate.add_argument("--top-k", type=int, default=0)
    generate.add_argument("--json", action="store_true", help='print {"text": ..., "steering": ...}')
    generate.add_argument("prompt")
    generate.set_defaults(run=_cmd_generate)

    demo = commands.add_parser("demo", help="extract the built-in dimensions and show their effect")
    demo.add_argument("--model", default="smollm2-135m")
    demo.add_argument("--prompt", default=None)
    demo.add_argument("--max-new-tokens", type=int, default=60)
    demo.set_defaults(run=_cmd_demo)

    add_registry_commands(commands)
    add_session_commands(commands)
    add_inference_commands(commands)
    add_job_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from steerlab_client import ClientError

    from .errors import SteerLabError

    if args.command in MODEL_COMMANDS:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()

    try:
        args.run(args)
    except (SteerLabError, ClientError, ValueError) as exc:
        print(f"steerlab: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"steerlab: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("steerlab: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
