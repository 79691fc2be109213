"""Benchmark: what per-row steering costs in batched generation.

Generates the same batch of prompts three ways with HF ``generate`` (greedy, KV cache):
unsteered, every row with the same mix, and every row with a different mix of all five
built-in dimensions. Prints tokens per second and each steered run's ratio to unsteered.

    .venv/bin/python scripts/bench_steering.py [--model smollm2-135m] [--batch 32] [--new-tokens 64]

Vector sets come from the extraction cache (extracted on first use, ~1 min per dimension).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

import torch

from steerlab.steering import BUILTIN_DIMENSIONS, builtin_dataset, generate, load_model
from steerlab.steering.cache import extract_cached

PROMPTS = [
    "Help me plan a weekend in Edinburgh.",
    "Where should we eat dinner on Friday?",
    "What's a good gift for my brother?",
    "Suggest something to cook for six people.",
]


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    lm = load_model(args.model)
    vector_sets = [extract_cached(lm, builtin_dataset(name)) for name in BUILTIN_DIMENSIONS]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]
    rng = random.Random(0)
    same = [{"cost": 60.0, "age": -40.0}] * args.batch
    distinct = [{vs.name: rng.uniform(-100, 100) for vs in vector_sets} for _ in range(args.batch)]

    def run(rows: list[dict[str, float]] | None) -> float:
        def call() -> list[str]:
            return generate(
                lm,
                prompts,
                vector_sets=vector_sets if rows else (),
                strengths=rows,
                max_new_tokens=args.new_tokens,
            )

        return min(_timed(call) for _ in range(args.repeats))

    # Every row generates exactly new_tokens tokens, so each run does the same work.
    lm.model.generation_config.min_new_tokens = args.new_tokens
    threads = torch.get_num_threads()
    print(f"model {args.model}, batch {args.batch}, {args.new_tokens} new tokens, {threads} threads")
    tokens = args.batch * args.new_tokens
    baseline = run(None)
    print(f"unsteered                 {tokens / baseline:8.1f} tok/s")
    for label, rows in (("same mix on every row", same), ("distinct 5-dim mix per row", distinct)):
        seconds = run(rows)
        print(f"{label:<26}{tokens / seconds:8.1f} tok/s   ratio to unsteered {baseline / seconds:.3f}")


if __name__ == "__main__":
    main()
