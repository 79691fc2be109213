"""The runner and engine on every device this machine has, in that device's serving dtype.

CI has only the CPU (float32, linears prepacked as the server does); on a machine with a GPU the
same tests run there in bfloat16. GPU kernels may round a row differently depending on how
many rows share the batch, so isolation is checked on logits, teacher-forced along one token
sequence, against a tolerance far below the steering's own effect, instead of on greedy text.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import make_tiny_model
from service_support import make_vector_set

from steerlab.inference.cpu import pack_linear_weights
from steerlab.steering import LoadedModel
from steerlab.steering.batching import PreparedVectorSet, RowSteering, fold_mix
from steerlab.steering.config import Sampling
from steerlab.steering.engine import ModelRunner
from steerlab.steering.engine.scheduler import (
    EngineSettings,
    Finished,
    GenerationRequest,
    InferenceEngine,
    TextDelta,
)

DEVICES = [("cpu", torch.float32)] + ([("cuda", torch.bfloat16)] if torch.cuda.is_available() else [])
# Largest logit difference allowed between a row alone and the same row in a mixed batch.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 0.1}
FORCED = [11, 42, 7, 99, 3, 250, 18, 64]  # the tokens every row is fed, one per step
PROMPTS = [[5, 9, 12, 40], [7, 3], [100, 101, 102, 103, 104, 105], [8, 8, 8]]


@pytest.fixture(scope="module", params=DEVICES, ids=lambda p: f"{p[0]}-{str(p[1]).removeprefix('torch.')}")
def device_model(request: pytest.FixtureRequest, tokenizer: Any) -> LoadedModel:
    device, dtype = request.param
    lm = make_tiny_model("llama", tokenizer)
    lm.model.to(device=device, dtype=dtype)
    pack_linear_weights(lm)  # what the server does; a no-op off the CPU
    return lm


def mixes(lm: LoadedModel) -> list[RowSteering]:
    dtype = next(lm.model.parameters()).dtype
    cost, age = (
        PreparedVectorSet.prepare(
            make_vector_set(name, seed=seed, model=lm.fingerprint, selected_layers=(1, 2), alpha_max=8.0),
            1,
            lm.device,
            dtype,
        )
        for name, seed in (("cost", 1), ("age", 2))
    )
    return [
        RowSteering.none(),
        fold_mix([(cost, 80.0)]),
        fold_mix([(age, -60.0)]),
        fold_mix([(cost, -40.0), (age, 100.0)]),
    ]


def alone(lm: LoadedModel, row: int, steering: RowSteering) -> list[torch.Tensor]:
    """Row ``row``'s logits at every step when it runs by itself."""
    runner = ModelRunner(lm)
    logits = [runner.prefill([PROMPTS[row]], [steering])[0]]
    for token in FORCED:
        logits.append(runner.decode(torch.tensor([token], device=lm.device))[0])
    return logits


def staggered(lm: LoadedModel, steerings: list[RowSteering]) -> dict[int, list[torch.Tensor]]:
    """Rows 0 and 1 start, 2 and 3 join at step 3, row 1 leaves at step 5; logits per row."""
    runner = ModelRunner(lm)
    logits: dict[int, list[torch.Tensor]] = {}
    present: list[int] = []

    def join(rows: list[int]) -> None:
        out = runner.prefill([PROMPTS[r] for r in rows], [steerings[r] for r in rows])
        for i, r in enumerate(rows):
            logits[r] = [out[i]]
        present.extend(rows)

    join([0, 1])
    for step in range(len(FORCED) + 3):
        if step == 3:
            join([2, 3])
        if step == 5:
            runner.retain([i for i, r in enumerate(present) if r != 1])
            present.remove(1)
        active = [r for r in present if len(logits[r]) <= len(FORCED)]
        if len(active) < len(present):
            runner.retain([present.index(r) for r in active])
            present[:] = active
        if not present:
            break
        tokens = torch.tensor([FORCED[len(logits[r]) - 1] for r in present], device=lm.device)
        out = runner.decode(tokens)
        for i, r in enumerate(present):
            logits[r].append(out[i])
    return logits


def test_each_row_gets_exactly_its_own_steering_in_a_changing_batch(device_model: LoadedModel) -> None:
    lm = device_model
    steerings = mixes(lm)
    tolerance = TOLERANCE[next(lm.model.parameters()).dtype]
    reference = {row: alone(lm, row, steering) for row, steering in enumerate(steerings)}
    batched = staggered(lm, steerings)
    for row in (0, 2, 3):  # row 1 left early
        assert len(batched[row]) == len(reference[row])
        worst = max((b - a).abs().max().item() for a, b in zip(reference[row], batched[row], strict=True))
        assert worst <= tolerance, f"row {row} differs from its solo run by {worst}"
    unsteered = alone(lm, 3, RowSteering.none())
    effect = max((s - u).abs().max().item() for s, u in zip(reference[3], unsteered, strict=True))
    assert effect > 20 * tolerance, f"the steering changed the logits by only {effect}"


def test_engine_streams_steered_and_sampled_answers(device_model: LoadedModel) -> None:
    lm = device_model
    steerings = mixes(lm)
    engine = InferenceEngine(ModelRunner(lm), EngineSettings(max_batch=4)).start()
    try:
        sampled = Sampling(temperature=1.0, seed=3)
        requests = [
            GenerationRequest(
                PROMPTS[i],
                steering=steerings[i],
                max_new_tokens=6,
                ignore_eos=True,
                sampling=sampled if i == 3 else Sampling(),
            )
            for i in range(4)
        ]
        streams = [engine.generate(request) for request in requests]
        for stream in streams:
            events = list(stream)
            finished = events[-1]
            assert isinstance(finished, Finished), finished
            assert finished.reason == "length" and finished.completion_tokens == 6
            assert "".join(e.text for e in events if isinstance(e, TextDelta)) == finished.text
    finally:
        engine.stop()
