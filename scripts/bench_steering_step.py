"""What steering costs per decode step: one batch, steps interleaved in random order.

Prefills a batch of ``--batch`` prompts on the engine's runner (linears prepacked as the server
does), then runs ``--steps`` rounds of three decode steps in random order: no steering, the
rows' mixes with every delta zeroed (the hooks and their operations, no effect), and the real
mixes (a random 5-dimension mix per row). Interleaving cancels the machine's drift; the context
grows by three tokens a round, so longer runs average over longer contexts.

    .venv/bin/python scripts/bench_steering_step.py [--steps 40] [--batch 32]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from bench_inference import PROMPTS

from steerlab.inference.cpu import pack_linear_weights
from steerlab.steering import BUILTIN_DIMENSIONS, builtin_dataset, load_model
from steerlab.steering.batching import BatchSteering, PreparedVectorSet, RowSteering, fold_mix
from steerlab.steering.cache import extract_cached
from steerlab.steering.chat import encode_prompt
from steerlab.steering.engine import ModelRunner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40, help="rounds of three interleaved steps")
    args = parser.parse_args()

    lm = load_model(args.model)
    pack_linear_weights(lm, batch_hint=args.batch)
    dtype = lm.dtype
    prepared = [
        PreparedVectorSet.prepare(extract_cached(lm, builtin_dataset(name)), 1, lm.device, dtype)
        for name in BUILTIN_DIMENSIONS
    ]
    rng = random.Random(0)
    rows = [fold_mix([(p, rng.uniform(-100, 100)) for p in prepared]) for _ in range(args.batch)]

    def batch(steering: list[RowSteering], zeroed: bool = False) -> BatchSteering:
        stacked = BatchSteering(lm.num_layers, lm.hidden_size, lm.device, dtype)
        stacked.append(steering)
        if zeroed:
            for delta, _steered in stacked.sites.values():
                delta.zero_()
        return stacked

    modes = {
        "none": batch([RowSteering.none()] * args.batch),
        "zero deltas": batch(rows, zeroed=True),
        "real mixes": batch(rows),
    }
    runner = ModelRunner(lm)
    messages = [[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}] for i in range(args.batch)]
    runner.prefill([encode_prompt(lm.tokenizer, m) for m in messages], [RowSteering.none()] * args.batch)
    tokens = torch.full((args.batch,), 100, dtype=torch.long)
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(args.steps):
        order = list(modes)
        rng.shuffle(order)
        for mode in order:
            runner.steering = modes[mode]
            started = time.perf_counter()
            runner.decode(tokens)
            times[mode].append(time.perf_counter() - started)

    base = statistics.median(times["none"])
    context = runner.kv.attention_mask.shape[1]
    print(f"{args.model}, batch {args.batch}, {3 * args.steps} steps, context up to {context} tokens")
    for mode, measured in times.items():
        median = statistics.median(measured)
        print(f"{mode:<12} median {median * 1000:7.1f} ms per step   x{median / base:.3f} of unsteered")


if __name__ == "__main__":
    main()
