"""The continuous-batching engine in-process, on the real SmolLM2 loaded as the server loads it
(linears prepacked for oneDNN): isolation, sampling, limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from service_support import make_vector_set

from steerlab.inference.cpu import pack_linear_weights
from steerlab.steering import LoadedModel, load_model
from steerlab.steering.batching import PreparedVectorSet, RowSteering, fold_mix
from steerlab.steering.chat import encode_prompt
from steerlab.steering.config import Sampling
from steerlab.steering.engine import ModelRunner
from steerlab.steering.engine.scheduler import (
    EngineSettings,
    Event,
    Failed,
    Finished,
    GenerationRequest,
    InferenceEngine,
    TextDelta,
)
from steerlab.steering.errors import InvalidArgumentError, ResourceExhaustedError, UnavailableError

PROMPTS = [
    "Plan a dinner in Rome for two.",
    "What should I buy my sister for her birthday?",
    "Suggest a weekend trip from London.",
    "How do I spend a rainy Sunday?",
]


@pytest.fixture(scope="module")
def served(smollm2_dir: Path) -> LoadedModel:
    lm = load_model("smollm2-135m")
    assert pack_linear_weights(lm) > 0
    return lm


@pytest.fixture(scope="module")
def engine(served: LoadedModel) -> Iterator[InferenceEngine]:
    engine = InferenceEngine(ModelRunner(served), EngineSettings(max_batch=8)).start()
    yield engine
    engine.stop()


def prepared(lm: LoadedModel, dimension: str, seed: int) -> PreparedVectorSet:
    vector_set = make_vector_set(
        dimension, seed=seed, model=lm.fingerprint, selected_layers=tuple(range(6, 18)), alpha_max=6.0
    )
    return PreparedVectorSet.prepare(vector_set, 1, lm.device, torch.float32)


def request(
    lm: LoadedModel, prompt: str, steering: RowSteering | None = None, **kwargs: object
) -> GenerationRequest:
    return GenerationRequest(
        encode_prompt(lm.tokenizer, prompt),
        steering=steering or RowSteering.none(),
        max_new_tokens=kwargs.pop("max_new_tokens", 24),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


def collect(events: Iterator[Event]) -> Finished:
    text = ""
    for event in events:
        if isinstance(event, TextDelta):
            text += event.text
        else:
            assert isinstance(event, Finished), event
            assert event.text == text, "the deltas must add up to the final text"
            return event
    raise AssertionError("no final event")


def test_each_row_gets_its_own_steering_whoever_joins_or_leaves(
    engine: InferenceEngine, served: LoadedModel
) -> None:
    cost, age = prepared(served, "cost", 1), prepared(served, "age", 2)
    mixes = [
        RowSteering.none(),
        fold_mix([(cost, 100.0)]),
        fold_mix([(cost, -60.0), (age, 80.0)]),
        fold_mix([(age, -100.0)]),
    ]
    lengths = [24, 12, 30, 18]  # rows leave at different steps
    requests = [
        request(served, PROMPTS[i % 2], mix, max_new_tokens=n)
        for i, (mix, n) in enumerate(zip(mixes, lengths, strict=True))
    ]
    alone = [collect(engine.generate(r)).text for r in requests]
    assert len(set(alone[:2])) == 2 and alone[2] != alone[0], "steering must change these answers"

    # Request i+1 arrives once request i has streamed i+2 deltas: staggered joins mid-decode.
    results: dict[int, Finished] = {}
    arrived = [threading.Event() for _ in requests]

    def run(i: int) -> None:
        text, deltas = "", 0
        for event in engine.generate(requests[i]):
            if isinstance(event, TextDelta):
                text, deltas = text + event.text, deltas + 1
                if deltas == i + 2 and i + 1 < len(requests):
                    arrived[i + 1].set()
            else:
                assert isinstance(event, Finished)
                results[i] = event
                if i + 1 < len(requests):
                    arrived[i + 1].set()

    threads = [
        threading.Thread(target=lambda i=i: (arrived[i].wait(60), run(i))) for i in range(len(requests))
    ]
    arrived[0].set()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    together = [results[i].text for i in range(len(requests))]
    assert together == alone
    assert [results[i].applied for i in range(len(requests))] == [m.applied for m in mixes]


def test_seeded_sampling_is_reproducible_in_any_batch(engine: InferenceEngine, served: LoadedModel) -> None:
    def sampled(seed: int) -> GenerationRequest:
        return request(served, PROMPTS[2], sampling=Sampling(temperature=1.0, top_p=0.9, top_k=50, seed=seed))

    first = collect(engine.generate(sampled(7))).text
    assert collect(engine.generate(sampled(7))).text == first
    assert collect(engine.generate(sampled(8))).text != first

    # Alongside greedy and other sampled rows, the seeded row draws the same tokens.
    outputs: dict[str, str] = {}
    jobs: dict[str, Callable[[], GenerationRequest]] = {
        "seeded": lambda: sampled(7),
        "greedy": lambda: request(served, PROMPTS[0]),
        "other": lambda: sampled(99),
    }
    threads = [
        threading.Thread(
            target=lambda k=k, make=make: outputs.__setitem__(k, collect(engine.generate(make())).text)
        )
        for k, make in jobs.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert outputs["seeded"] == first


def test_stop_strings_end_the_answer_and_are_not_sent(engine: InferenceEngine, served: LoadedModel) -> None:
    full = collect(engine.generate(request(served, PROMPTS[0], max_new_tokens=40))).text
    words = full.split()
    assert len(words) > 4
    stop = " " + words[3]
    finished = collect(engine.generate(request(served, PROMPTS[0], max_new_tokens=40, stop=(stop,))))
    assert finished.reason == "stop"
    assert stop not in finished.text
    assert full.startswith(finished.text) and len(finished.text) < len(full)


def test_length_limit_and_token_counts(engine: InferenceEngine, served: LoadedModel) -> None:
    finished = collect(engine.generate(request(served, PROMPTS[1], max_new_tokens=5)))
    assert finished.reason == "length"
    assert finished.completion_tokens == 5
    assert finished.prompt_tokens == len(encode_prompt(served.tokenizer, PROMPTS[1]))
    assert 0 <= finished.queued_s <= finished.time_to_first_token_s <= finished.total_s


def test_bad_requests_are_refused_before_queueing(engine: InferenceEngine, served: LoadedModel) -> None:
    too_long = GenerationRequest([1] * engine.context_length, max_new_tokens=1)
    with pytest.raises(InvalidArgumentError, match="exceed the model's context"):
        engine.submit(too_long, lambda event: None)
    with pytest.raises(InvalidArgumentError, match="max_new_tokens"):
        engine.submit(request(served, "hi", max_new_tokens=0), lambda event: None)
    with pytest.raises(InvalidArgumentError, match="stop strings"):
        engine.submit(request(served, "hi", stop=("",)), lambda event: None)
    with pytest.raises(InvalidArgumentError, match="empty"):
        engine.submit(GenerationRequest([]), lambda event: None)
    assert engine.queue_depth == 0
    # The previous test's rows leave the batch just after their Finished events go out.
    deadline = time.monotonic() + 5
    while engine.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.running == 0


def test_a_burst_fills_the_batch_and_then_the_queue(served: LoadedModel) -> None:
    """Issue 20: max_batch running plus max_queue waiting are admitted, even when the whole
    burst arrives before the engine has moved any request into the batch."""
    burst = [request(served, PROMPTS[0], max_new_tokens=1000, ignore_eos=True) for _ in range(9)]
    engine = InferenceEngine(ModelRunner(served), EngineSettings(max_batch=4, max_queue=4)).start()
    try:
        handles = [engine.submit(generation, lambda e: None) for generation in burst[:8]]
        with pytest.raises(ResourceExhaustedError, match="queue is full"):
            engine.submit(burst[8], lambda e: None)
        for handle in handles:
            handle.cancel()
    finally:
        engine.stop()


@pytest.fixture()
def one_slot(served: LoadedModel) -> Iterator[InferenceEngine]:
    engine = InferenceEngine(ModelRunner(served), EngineSettings(max_batch=1, max_queue=1)).start()
    yield engine
    engine.stop()


def test_full_queue_is_refused_at_once_and_cancel_frees_the_slot(
    one_slot: InferenceEngine, served: LoadedModel
) -> None:
    events: list[Event] = []
    started = threading.Event()

    def first_sink(event: Event) -> None:
        events.append(event)
        started.set()

    running = one_slot.submit(request(served, PROMPTS[0], max_new_tokens=500), first_sink)
    assert started.wait(60)
    queued_events: list[Event] = []
    one_slot.submit(request(served, PROMPTS[1], max_new_tokens=3), queued_events.append)
    began = time.monotonic()
    with pytest.raises(ResourceExhaustedError, match="queue is full"):
        one_slot.submit(request(served, PROMPTS[2]), lambda event: None)
    assert time.monotonic() - began < 0.5

    running.cancel()
    deadline = time.monotonic() + 60
    while not any(isinstance(e, Finished) for e in queued_events) and time.monotonic() < deadline:
        time.sleep(0.05)
    cancelled = [e for e in events if isinstance(e, Finished)]
    assert cancelled and cancelled[0].reason == "cancelled"
    assert cancelled[0].completion_tokens < 500
    finished = [e for e in queued_events if isinstance(e, Finished)]
    assert finished and finished[0].reason == "length"


def test_an_expired_deadline_frees_the_slot(one_slot: InferenceEngine, served: LoadedModel) -> None:
    expiring = request(served, PROMPTS[0], max_new_tokens=500, deadline=time.monotonic() + 0.5)
    finished = collect(one_slot.generate(expiring))
    assert finished.reason == "deadline"
    assert 0 < finished.completion_tokens < 500
    assert collect(one_slot.generate(request(served, PROMPTS[1], max_new_tokens=3))).reason == "length"


class FailingOnceRunner(ModelRunner):
    """A runner whose third decode step fails, as a GPU error or a lost peer would."""

    def __init__(self, lm: LoadedModel) -> None:
        super().__init__(lm)
        self.decodes = 0

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        self.decodes += 1
        if self.decodes == 3:
            raise RuntimeError("device lost")
        return super().decode(tokens)


def test_a_failed_step_fails_its_requests_and_the_engine_carries_on(served: LoadedModel) -> None:
    engine = InferenceEngine(FailingOnceRunner(served)).start()
    try:
        events = list(engine.generate(request(served, PROMPTS[0], max_new_tokens=10)))
        assert isinstance(events[-1], Failed)
        assert isinstance(events[-1].error, UnavailableError) and "device lost" in str(events[-1].error)
        assert collect(engine.generate(request(served, PROMPTS[1], max_new_tokens=4))).reason == "length"
    finally:
        engine.stop()
