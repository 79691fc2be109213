"""Benchmark: the steered inference engine against unsteered and Hugging Face baselines.

Runs the engine in-process (no gRPC) on a built-in model, greedy, every request generating
exactly ``--new-tokens`` tokens, and prints aggregate tokens/s and time to first token for:

  (a) engine, --batch concurrent requests, unsteered
  (b) engine, the same requests, each with its own random mix over all five dimensions
  (c) engine, --requests requests with distinct mixes arriving over time (Poisson), and the
      same arrivals unsteered, to compare at the same concurrency
  (d) naive baseline: HF ``generate`` with steering hooks, one request at a time
  (e) HF ``generate`` on one static batch of --batch requests, unsteered

The engine's model is loaded as ``steerlab inference serve`` loads it (on the CPU: linear
weights prepacked for oneDNN, see ``steerlab.inference.cpu``); the HF baselines get a plain
copy. ``--plain-linears`` runs the engine on the plain model too, to show what packing adds.

    .venv/bin/python scripts/bench_inference.py [--model smollm2-135m] [--repeats 3] [--json out.json]

The machine's speed drifts, so every run is repeated in rounds; ratios are taken within a round
and the median over rounds is reported. Within a round (a) and (b) run as a, b, b, a and (e)
twice around (d), so a steady drift cancels out of their ratios.

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

from steerlab.inference.cpu import pack_linear_weights
from steerlab.steering import (
    BUILTIN_DIMENSIONS,
    LayerScore,
    LoadedModel,
    VectorSet,
    builtin_dataset,
    default_top_k,
    load_model,
    steer,
    wrap_model,
)
from steerlab.steering.batching import PreparedVectorSet, RowSteering, fold_mix
from steerlab.steering.cache import extract_cached
from steerlab.steering.chat import encode_prompt, pad_token_ids
from steerlab.steering.engine import ModelRunner
from steerlab.steering.engine.scheduler import (
    EngineSettings,
    Event,
    Finished,
    GenerationRequest,
    InferenceEngine,
)
from steerlab.steering.models import resolve_model_dir

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


def merged(results: Sequence[Result]) -> Result:
    """Several runs of one workload as one: their tokens over their summed time."""
    return Result(
        results[0].label,
        sum(r.tokens for r in results),
        sum(r.seconds for r in results),
        [t for r in results for t in r.ttft],
    )


def load_models(args: argparse.Namespace) -> tuple[LoadedModel, LoadedModel]:
    """The engine's model (loaded as the server loads it) and a plain copy for the HF baselines."""
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device == "cuda" else "float32"))
    if args.random_config:
        served, plain = random_model(args, dtype), random_model(args, dtype)
    else:
        served, plain = (load_model(args.model, dtype=dtype, device=args.device) for _ in range(2))
    if not args.plain_linears:
        pack_linear_weights(served, batch_hint=args.batch)
    return served, plain


def random_model(args: argparse.Namespace, dtype: torch.dtype) -> LoadedModel:
    """``--model``'s architecture and tokenizer with ``--random-config`` overrides, random weights."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    directory = resolve_model_dir(args.model)
    config = AutoConfig.from_pretrained(str(directory), **json.loads(args.random_config))
    torch.manual_seed(0)
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return wrap_model(model, AutoTokenizer.from_pretrained(str(directory)), f"random {args.model}")


def vector_sets(lm: LoadedModel, random_directions: bool) -> list[VectorSet]:
    """The built-in dimensions: extracted (cached), or random directions on a random model."""
    if not random_directions:
        return [extract_cached(lm, builtin_dataset(name)) for name in BUILTIN_DIMENSIONS]
    generator = torch.Generator().manual_seed(0)
    layers, hidden = lm.num_layers, lm.hidden_size
    sets = []
    for name in BUILTIN_DIMENSIONS:
        directions = torch.randn(layers, hidden, generator=generator)
        selected = torch.randperm(layers, generator=generator)[: default_top_k(layers)]
        sets.append(
            VectorSet(
                dimension=builtin_dataset(name).dimension,
                directions=directions / directions.norm(dim=-1, keepdim=True),
                selected_layers=tuple(sorted(selected.tolist())),
                layer_scores=tuple(LayerScore(i, 0.5, 0.5) for i in range(layers)),
                alpha_max=4.0,
                site="norm",
                method="random",
                parameters={},
                dataset_hash="0" * 64,
                model=lm.fingerprint,
                library_version="bench",
                created_at="1970-01-01T00:00:00+00:00",
            )
        )
    return sets


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
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", help="default: bfloat16 on cuda, float32 on the CPU")
    parser.add_argument(
        "--random-config",
        help="JSON overrides of --model's config, e.g. a 1B shape; random weights and random "
        "steering directions (for throughput only)",
    )
    parser.add_argument(
        "--plain-linears", action="store_true", help="run the engine without prepacked CPU linears"
    )
    parser.add_argument("--json", help="also write the results and ratios here")
    args = parser.parse_args()

    lm, plain = load_models(args)
    dtype = lm.dtype
    prepared = [
        PreparedVectorSet.prepare(vector_set, 0, lm.device, dtype)
        for vector_set in vector_sets(plain, random_directions=bool(args.random_config))
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
    labels = {
        "a": f"(a) engine, {args.batch} concurrent, unsteered",
        "b": f"(b) engine, {args.batch} concurrent, distinct 5-dim mixes",
        "c": f"(c) engine, {args.requests} distinct mixes arriving",
        "c_unsteered": "(c') the same arrivals, unsteered",
    }

    def engine_runs(engine: InferenceEngine) -> dict[str, Result]:
        """(c) and (c') back to back, then a, b, b, a."""
        measured = {
            "c": run_engine(engine, labels["c"], requests(args.requests, True), poisson),
            "c_unsteered": run_engine(engine, labels["c_unsteered"], requests(args.requests, False), poisson),
        }
        order = ["a", "b", "b", "a"]
        runs = [run_engine(engine, labels[key], requests(args.batch, key == "b"), at_once) for key in order]
        for key in ("a", "b"):
            measured[key] = merged([run for run_key, run in zip(order, runs, strict=True) if run_key == key])
        return measured

    def hf_runs() -> dict[str, Result]:
        """e, d, e, on the plain model."""
        first_e = run_hf_static(plain, prompts[: args.batch], args.new_tokens)
        naive = run_naive(plain, prepared, prompts[: args.naive_requests], naive_mixes, args.new_tokens)
        second_e = run_hf_static(plain, prompts[: args.batch], args.new_tokens)
        return {"d": naive, "e": merged([first_e, second_e])}

    # This machine's speed drifts by up to +-20% over minutes: ratios are taken within a round,
    # and the median over rounds is reported. Every forward runs on the main thread, as in
    # `steerlab inference serve`: the engine's scheduler owns it while a driver thread submits,
    # then the HF baselines run there.
    rounds: list[dict[str, Result]] = []
    for round_number in range(args.repeats):
        measured: dict[str, Result] = {}
        engine = InferenceEngine(ModelRunner(lm), settings)

        def drive(engine: InferenceEngine = engine, measured: dict[str, Result] = measured) -> None:
            engine.ready.wait()
            try:
                run_engine(engine, "warm-up", requests(4, True), [0.0] * 4)
                measured.update(engine_runs(engine))
            finally:
                engine.stop()

        driver = threading.Thread(target=drive)
        driver.start()
        engine.run_forever()
        driver.join()
        measured.update(hf_runs())
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
    linears = "plain" if args.plain_linears else "prepacked where supported"
    print(
        f"model {lm.name} ({sum(p.numel() for p in plain.model.parameters()) / 1e6:.0f}M parameters) "
        f"on {lm.device}, {dtype}, engine linears {linears}; {args.new_tokens} new tokens per "
        f"request, greedy, {threads} threads, {args.repeats} rounds (rates: each run's best round)"
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
                    "model": lm.name,
                    "device": str(lm.device),
                    "dtype": str(dtype),
                    "plain_linears": args.plain_linears,
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
