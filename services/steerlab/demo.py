"""The local demo: extract the built-in dimensions and answer one prompt across strengths."""

from __future__ import annotations

import textwrap
import time

from .steering import BUILTIN_DIMENSIONS, builtin_dataset, generate, load_model
from .steering.cache import extract_cached

DEFAULT_PROMPT = "Help me plan a weekend in Edinburgh."
STRENGTHS = (-100, 100)


def _print_answer(label: str, text: str) -> None:
    prefix = f"  {label:<19} "
    print(
        textwrap.fill(
            " ".join(text.split()), width=110, initial_indent=prefix, subsequent_indent=" " * len(prefix)
        )
    )


def run_demo(model: str = "smollm2-135m", prompt: str | None = None, max_new_tokens: int = 60) -> None:
    """Extract (or reuse) the five built-in vector sets, then steer one prompt with each."""
    prompt = prompt or DEFAULT_PROMPT
    started = time.perf_counter()
    print(f"Loading {model} ...", flush=True)
    lm = load_model(model)
    vector_sets = []
    for name in BUILTIN_DIMENSIONS:
        print(f"Vector set {name!r}: extracting or loading from cache ...", flush=True)
        vector_set = extract_cached(lm, builtin_dataset(name), progress=True)
        print(
            f"  {len(vector_set.selected_layers)} layers, held-out accuracy "
            f"{vector_set.heldout_accuracy:.2f}, alpha_max {vector_set.alpha_max:.3f}"
        )
        vector_sets.append(vector_set)

    # One batch: the unsteered answer, then each dimension at both extremes, row by row.
    rows: list[dict[str, float] | None] = [None]
    rows += [{vs.name: pct} for vs in vector_sets for pct in STRENGTHS]
    print(f"\nGenerating {len(rows)} answers in one batch, each row with its own steering ...", flush=True)
    answers = generate(
        lm, [prompt] * len(rows), vector_sets=vector_sets, strengths=rows, max_new_tokens=max_new_tokens
    )
    print(f"\nPrompt: {prompt}\n")
    _print_answer("unsteered", answers[0])
    for index, vector_set in enumerate(vector_sets):
        dim = vector_set.dimension
        print(f"\n{dim.name}: {dim.negative_pole} (-100%) <-> {dim.positive_pole} (+100%)")
        low, high = answers[1 + 2 * index], answers[2 + 2 * index]
        _print_answer(f"-100% {dim.negative_pole}", low)
        _print_answer("0%", answers[0])
        _print_answer(f"+100% {dim.positive_pole}", high)
    print(f"\nDone in {time.perf_counter() - started:.0f} s.")
