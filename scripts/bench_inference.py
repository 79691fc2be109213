"""Benchmark: the steered inference engine against unsteered and Hugging Face baselines.

Runs the engine in-process (no gRPC) on a built-in model, greedy, every request generating
exactly ``--new-tokens`` tokens, and prints aggregate tokens/s and time to first token for:

  (a) engine, --batch concurrent requests, unsteered
  (b) engine, the same requests, each with its own random mix over all five dimensions
  (c) engine, --requests requests with distinct mixes arriving over time (Poisson), and the
      same arrivals unsteered, to compare at the same concurrency
  (d) naive baseline: HF ``generate`` with steering hooks, one request at a time
  (e) HF ``generate`` on one static batch of --batch requests, unsteered

    .venv/bin/python scripts/bench_inference.py [--model smollm2-135m] [--repeats 3] [--json out.json]

The machine's speed drifts, so every run is repeated in rounds; ratios are taken within a round
(runs back to back) and the median over rounds is reported.

Vector sets come from the extraction cache (extracted on first use, ~1 min per dimension).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from steerlab.inference.engine import EngineSettings, Event, Finished, GenerationRequest, InferenceEngine
from steerlab.inference.runner import ModelRunner
from steerlab.inference.steering import PreparedVectorSet, RowSteering, fold_mix
from steerlab.steering import BUILTIN_DIMENSIONS, LoadedModel, builtin_dataset, load_model, steer
from steerlab.steering.cache import extract_cached
from steerlab.steering.chat import encode_prompt, pad_token_ids

PROMPTS = [
    "Help me plan a weekend in Edinburgh.",
    "Where should we eat dinner on Friday?",
    "What's a good gift for my brother?",
    "Suggest something to cook for six people.",
    "How should I spend a free afternoon in Paris?",
    "Recommend a hotel for a business trip.",
]


@dataclass
class Result:
    label: str
    tokens: int
    seconds: float
    ttft: list[float]

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds

    def row(self) -> str:
        p50 = statistics.median(self.ttft)
        p99 = sorted(self.ttft)[min(len(self.ttft) - 1, round(0.99 * (len(self.ttft) - 1)))]
        return f"{self.label:<52}{self.rate:9.1f}  {p50:9.3f}  {p99:9.3f}"

    def to_json(self) -> dict[str, float]:
        return {
            "tokens_per_s": self.rate,
            "ttft_p50_s": statistics.median(self.ttft),
            "ttft_p99_s": sorted(self.ttft)[round(0.99 * (len(self.ttft) - 1))],
            "requests": len(self.ttft),
        }


def run_engine(
    engine: InferenceEngine, label: str, requests: Sequence[GenerationRequest], arrivals: Sequence[float]
) -> Result:
    """Submit request i at ``arrivals[i]`` seconds; wait for all; tokens/s over the whole run."""
    first_token: dict[int, float] = {}
    submitted: dict[int, float] = {}
    done = threading.Semaphore(0)

    def sink(i: int) -> Callable[[Event], None]:
        def on_event(event: Event) -> None:
            first_token.setdefault(i, time.perf_counter())
            if isinstance(event, Finished):
                done.release()

        return on_event

    started = time.perf_counter()
    for i, (request, at) in enumerate(zip(requests, arrivals, strict=True)):
        delay = started + at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        submitted[i] = time.perf_counter()
        engine.submit(request, sink(i))
    for _ in requests:
        done.acquire()
    seconds = time.perf_counter() - started
    tokens = sum(r.max_new_tokens for r in requests)
    return Result(label, tokens, seconds, [first_token[i] - submitted[i] for i in range(len(requests))])


class FirstTokenTimer:
    """A ``generate`` streamer that notes when the first new token comes out."""

    def __init__(self) -> None:
        self.calls = 0
        self.first_token_at = 0.0

    def put(self, value: torch.Tensor) -> None:
        self.calls += 1
        if self.calls == 2:  # the first call carries the prompt
            self.first_token_at = time.perf_counter()

    def end(self) -> None:
        pass


def hf_generate(lm: LoadedModel, prompts: Sequence[list[int]], new_tokens: int) -> float:
    """Greedy HF ``generate`` of exactly ``new_tokens`` tokens; returns when the first came out."""
    input_ids, attention_mask = pad_token_ids(prompts, lm.tokenizer.pad_token_id, "left")
    timer = FirstTokenTimer()
    with torch.no_grad():
        lm.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=lm.tokenizer.pad_token_id,
            streamer=timer,
        )
    return timer.first_token_at


def run_naive(
    lm: LoadedModel,
    vector_sets: list[PreparedVectorSet],
    prompts: Sequence[list[int]],
    mixes: list[dict[str, float]],
    new_tokens: int,
) -> Result:
    """One request at a time, steering hooks around HF generate; all requests arrive at t=0."""
    core_sets = [p.vector_set for p in vector_sets]
    started = time.perf_counter()
    ttft = []
    for prompt, mix in zip(prompts, mixes, strict=True):
        with steer(lm, core_sets, [mix]):
            ttft.append(hf_generate(lm, [prompt], new_tokens) - started)
    seconds = time.perf_counter() - started
    return Result("(d) naive: HF generate + hooks, one at a time", len(prompts) * new_tokens, seconds, ttft)


def run_hf_static(lm: LoadedModel, prompts: Sequence[list[int]], new_tokens: int) -> Result:
    started = time.perf_counter()
    first = hf_generate(lm, prompts, new_tokens) - started
    seconds = time.perf_counter() - started
    label = "(e) HF generate, one static batch, unsteered"
    return Result(label, len(prompts) * new_tokens, seconds, [first] * len(prompts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=256, help="requests in run (c)")
    parser.add_argument("--arrivals-per-s", type=float, default=3.0, help="mean arrival rate in run (c)")
    parser.add_argument("--naive-requests", type=int, default=4, help="requests in the slow baseline (d)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds of every run (ratios: median of rounds)"
    )
    parser.add_argument("--json", help="also write the results and ratios here")
    args = parser.parse_args()

    lm = load_model(args.model)
    dtype = next(lm.model.parameters()).dtype
    prepared = [
        PreparedVectorSet.prepare(extract_cached(lm, builtin_dataset(name)), 0, lm.device, dtype)
        for name in BUILTIN_DIMENSIONS
    ]
    rng = random.Random(0)

    def random_mix() -> list[tuple[PreparedVectorSet, float]]:
        return [(p, rng.uniform(-100, 100)) for p in prepared]

    prompts = [
        encode_prompt(lm.tokenizer, PROMPTS[i % len(PROMPTS)]) for i in range(max(args.batch, args.requests))
    ]

    def requests(count: int, steered: bool) -> list[GenerationRequest]:
        return [
            GenerationRequest(
                prompts[i],
                steering=fold_mix(random_mix()) if steered else RowSteering.none(),
                max_new_tokens=args.new_tokens,
                ignore_eos=True,
            )
            for i in range(count)
        ]

    settings = EngineSettings(max_batch=args.batch, max_queue=args.requests + args.batch)
    at_once = [0.0] * args.batch
    clock = 0.0
    poisson = []
    for _ in range(args.requests):
        poisson.append(clock)
        clock += rng.expovariate(args.arrivals_per_s)
    naive_mixes = [{p.name: rng.uniform(-100, 100) for p in prepared} for _ in range(args.naive_requests)]

    def engine_runs(engine: InferenceEngine) -> dict[str, Callable[[], Result]]:
        return {
            "a": lambda: run_engine(
                engine,
                f"(a) engine, {args.batch} concurrent, unsteered",
                requests(args.batch, False),
                at_once,
            ),
            "b": lambda: run_engine(
                engine,
                f"(b) engine, {args.batch} concurrent, distinct 5-dim mixes",
                requests(args.batch, True),
                at_once,
            ),
            "c": lambda: run_engine(
                engine,
                f"(c) engine, {args.requests} distinct mixes arriving",
                requests(args.requests, True),
                poisson,
            ),
            "c_unsteered": lambda: run_engine(
                engine, "(c') the same arrivals, unsteered", requests(args.requests, False), poisson
            ),
        }

    hf_runs: dict[str, Callable[[], Result]] = {
        "d": lambda: run_naive(lm, prepared, prompts[: args.naive_requests], naive_mixes, args.new_tokens),
        "e": lambda: run_hf_static(lm, prompts[: args.batch], args.new_tokens),
    }

    # This machine's speed drifts by up to +-20% over minutes. Each round runs everything once,
    # back to back; a ratio is taken within each round and the median over rounds is reported.
    # Every forward runs on the main thread, as in `steerlab inference serve`: the engine's
    # scheduler owns it while a driver thread submits, then the HF baselines run there.
    rounds: list[dict[str, Result]] = []
    for round_number in range(args.repeats):
        measured: dict[str, Result] = {}
        engine = InferenceEngine(ModelRunner(lm), settings)

        def drive(engine: InferenceEngine = engine, measured: dict[str, Result] = measured) -> None:
            engine.ready.wait()
            try:
                run_engine(engine, "warm-up", requests(4, True), [0.0] * 4)
                for key, run in engine_runs(engine).items():
                    measured[key] = run()
            finally:
                engine.stop()

        driver = threading.Thread(target=drive)
        driver.start()
        engine.run_forever()
        driver.join()
        for key, run in hf_runs.items():
            measured[key] = run()
        for result in measured.values():
            print(f"round {round_number + 1}: {result.row()}", flush=True)
        rounds.append(measured)

    per_round = [
        {
            "steered_vs_unsteered": r["b"].rate / r["a"].rate,
            "steered_vs_naive": r["b"].rate / r["d"].rate,
            "steered_vs_hf_static": r["b"].rate / r["e"].rate,
            "distinct256_vs_unsteered": r["c"].rate / r["c_unsteered"].rate,
        }
        for r in rounds
    ]
    ratios = {name: statistics.median(r[name] for r in per_round) for name in per_round[0]}
    results = {key: max((r[key] for r in rounds), key=lambda result: result.rate) for key in rounds[0]}
    threads = torch.get_num_threads()
    print(
        f"model {args.model}, {args.new_tokens} new tokens per request, greedy, {threads} threads, "
        f"{args.repeats} rounds (rates: each run's best round)"
    )
    print(f"{'run':<52}{'tok/s':>9}  {'TTFT p50':>9}  {'TTFT p99':>9}")
    for result in results.values():
        print(result.row())
    targets = {
        "steered_vs_unsteered": 0.95,
        "steered_vs_naive": 12,
        "steered_vs_hf_static": 1.0,
        "distinct256_vs_unsteered": 0.95,
    }
    print(f"{'ratio':<28}{'median':>9}  per round")
    for name, value in ratios.items():
        verdict = "meets" if value >= targets[name] else "MISSES"
        spread = " ".join(f"{r[name]:.2f}" for r in per_round)
        print(f"{name:<28}{value:9.2f}  {spread}   ({verdict} target {targets[name]})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "model": args.model,
                    "threads": threads,
                    "results": {k: r.to_json() for k, r in results.items()},
                    "ratios": ratios,
                    "ratios_per_round": per_round,
                },
                handle,
                indent=2,
            )


if __name__ == "__main__":
    main()
