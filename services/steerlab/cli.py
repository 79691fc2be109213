"""The ``steerlab`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from typing import NoReturn

from .allinone.cli import add_commands as add_up_command
from .allinone.migrate import add_commands as add_migrate_command
from .auth.cli import add_commands as add_key_commands
from .cli_options import add_extraction_options, add_tls_ca_option, client_tls, extraction_parameters
from .experiments.cli import add_commands as add_experiment_commands
from .inference.cli import add_commands as add_inference_commands
from .jobs.cli import add_commands as add_job_commands
from .registry.cli import add_commands as add_registry_commands
from .sessions.cli import add_commands as add_session_commands

MODEL_COMMANDS = (
    "experiments",
    "extract",
    "generate",
    "demo",
    "inference",
    "up",
)  # the rest stay fast: no torch, no transformers


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_steer(values: Sequence[str]) -> dict[str, float]:
    """Parse ``NAME=PCT`` arguments (``cost=+40``, ``age=-100%``), each within -100..100."""
    from steerlab_client.chat import parse_strengths

    from .steering import SteeringError, check_strength

    try:
        strengths = parse_strengths(values)
    except ValueError as exc:
        raise SteeringError(f"--steer: {exc}") from None
    return {name: check_strength(name, percent) for name, percent in strengths.items()}


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
    estimate = vector_set.functional_range
    print(
        f"alpha_max      {vector_set.alpha_max:.4f}, limited by {estimate['limited_by']}: perplexity <= "
        f"{config.perplexity_bound:g}x unsteered {estimate['baseline_perplexity']:.2f}, repeated 4-grams "
        f"<= {config.repetition_bound:g}x unsteered {100 * estimate['baseline_repetition']:.1f}%"
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

    run_demo(model=args.model, prompt=args.prompt, max_new_tokens=args.max_new_tokens, auth=args.auth)


def _cmd_chat(args: argparse.Namespace) -> None:
    import contextlib
    import getpass
    import os

    from steerlab_client import SteerLab
    from steerlab_client.chat import Chat, ChatSettings, parse_strengths

    from .auth.principal import KEY_PREFIX

    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    # With an API key a new session is the key's user's: the session service fills it in.
    keyed = os.environ.get("STEERLAB_TOKEN", "").startswith(KEY_PREFIX)
    settings = ChatSettings(
        mode=args.mode,
        strengths=parse_strengths(args.steer),
        user=args.user or ("" if keyed else getpass.getuser()),
        session=args.session or "",
        max_new_tokens=args.max_new_tokens,
    )
    server = args.server or os.environ.get("STEERLAB_SERVER") or "localhost:50050"
    with SteerLab(server, tls=client_tls(args)) as steerlab:  # sends STEERLAB_TOKEN when set
        Chat(steerlab, settings, sys.stdout).run()


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

    demo = commands.add_parser(
        "demo", help="start the platform (steerlab up), show it working through the SDK, stop it"
    )
    demo.add_argument("--model", default="smollm2-135m")
    demo.add_argument("--prompt", default=None)
    demo.add_argument("--max-new-tokens", type=int, default=60)
    demo.add_argument(
        "--auth", choices=("none", "keys"), default="none", help="keys: the platform requires API keys"
    )
    demo.set_defaults(run=_cmd_demo)

    chat = commands.add_parser("chat", help="chat with a steered model in the terminal (needs a server)")
    chat.add_argument(
        "--server", help="HOST:PORT of `steerlab up` (default STEERLAB_SERVER or localhost:50050)"
    )
    add_tls_ca_option(chat)
    chat.add_argument("--mode", choices=["select", "calibrate", "learn"], default="select")
    chat.add_argument(
        "--steer", action="append", default=[], metavar="NAME=PCT", help="starting strength (repeatable)"
    )
    chat.add_argument("--user", help="user id for the new session (default: your login name)")
    chat.add_argument("--session", help="resume this session instead of starting one")
    chat.add_argument("--max-new-tokens", type=int, default=160)
    chat.set_defaults(run=_cmd_chat)

    add_registry_commands(commands)
    add_session_commands(commands)
    add_inference_commands(commands)
    add_job_commands(commands)
    add_up_command(commands)
    add_experiment_commands(commands)
    add_migrate_command(commands)
    add_key_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from steerlab_client import ClientError

    from .steering.errors import SteerLabError

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
