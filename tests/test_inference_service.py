"""The inference service over a real socket: streaming, sessions, aliases, limits and bad input.

Vector sets come from a registry service on PostgreSQL; the model is the real SmolLM2.
"""

from __future__ import annotations

import math
import queue
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import torch
from service_support import ServerThread, fresh_postgres_database, make_vector_set
from test_sessions_service import start_sessions

from steerlab.inference.server import InferenceSettings, build_inference_server
from steerlab.serving import ServerSettings
from steerlab.sessions.learn import make_interpreter
from steerlab.steering import LoadedModel, VectorSet, generate, steer
from steerlab.steering.apply import prepare_vector_sets
from steerlab.steering.batching import fold_strengths
from steerlab.steering.chat import encode_prompt, pad_token_ids
from steerlab.steering.engine import Event, Finished, GenerationRequest, InferenceEngine, ModelRunner
from steerlab.steering.engine.scheduler import EngineSettings
from steerlab.steering.models import ModelFingerprint
from steerlab_client import ClientError, InferenceClient, RegistryClient, SessionClient

PROMPT = "Plan a dinner in Rome for two."


def steering_set(lm: LoadedModel, dimension: str, seed: int) -> bytes:
    vector_set = make_vector_set(
        dimension,
        seed=seed,
        model=lm.fingerprint,
        model_name="smollm2-135m",
        selected_layers=tuple(range(6, 18)),
        alpha_max=6.0,
    )
    return vector_set.to_bytes()


def start_inference(
    lm: LoadedModel, registry: str, sessions: str = "", engine: EngineSettings | None = None
) -> ServerThread:
    settings = InferenceSettings(
        model="smollm2-135m",
        registry=registry,
        sessions=sessions,
        engine=engine or EngineSettings(max_batch=8),
        resolve_ttl_s=0.2,
        server=ServerSettings(port=0, metrics_port=0),
    )
    served = build_inference_server(settings, runner=ModelRunner(lm))
    return ServerThread(server=served.server, closing=served.close)


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def registry(database_url: str, smollm2: LoadedModel) -> Iterator[ServerThread]:
    running = ServerThread(database_url)
    with RegistryClient(running.target) as client:
        client.push(steering_set(smollm2, "cost", 1))  # v1
        client.push(steering_set(smollm2, "cost", 2))  # v2
        client.set_alias("cost", 1, "production")
        client.push(steering_set(smollm2, "age", 3))  # v1, no alias: the latest is used
        other = ModelFingerprint("llama", 30, 576, 49152, "e" * 64)
        client.push(make_vector_set("culture", model=other, model_name="other-model").to_bytes())
    yield running
    running.stop()


@pytest.fixture(scope="module")
def sessions(database_url: str) -> Iterator[ServerThread]:
    running = start_sessions(database_url, make_interpreter())
    yield running
    running.stop()


@pytest.fixture(scope="module")
def inference(smollm2: LoadedModel, registry: ServerThread, sessions: ServerThread) -> Iterator[ServerThread]:
    running = start_inference(smollm2, registry.target, sessions.target)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(inference: ServerThread) -> Iterator[InferenceClient]:
    with InferenceClient(inference.target) as opened:
        yield opened


def test_streams_text_then_reports_versions_strengths_and_timings(client: InferenceClient) -> None:
    responses = list(client.stream(PROMPT, strengths={"cost": 80, "age": -30}, max_new_tokens=16))
    deltas = [r.text_delta for r in responses[:-1]]
    done = responses[-1].done
    assert len(deltas) > 3 and all(not r.HasField("done") for r in responses[:-1])
    assert "".join(deltas) == done.text
    assert done.completion_tokens == 16 and done.prompt_tokens > 10
    assert 0 < done.time_to_first_token_seconds <= done.total_seconds
    applied = {a.dimension: (a.vector_set_version, a.strength) for a in done.applied}
    assert applied == {"age": (1, -30.0), "cost": (1, 80.0)}  # cost via "production", age latest

    unsteered = client.generate(PROMPT, max_new_tokens=16)
    assert unsteered.text != done.text and not unsteered.done.applied
    pinned = client.generate(PROMPT, strengths={"cost": 80}, pins={"cost": 2}, max_new_tokens=16)
    assert pinned.applied == {"cost": (2, 80.0)}
    model = client.get_model()
    assert model.name == "smollm2-135m" and model.fingerprint.hidden_size == 576
    assert model.context_length == 8192 and model.tensor_parallel == 1


@pytest.mark.parametrize(
    ("options", "code", "match"),
    [
        ({"strengths": {"nonexistent": 10}}, grpc.StatusCode.NOT_FOUND, "nonexistent"),
        ({"strengths": {"cost": 150}}, grpc.StatusCode.INVALID_ARGUMENT, "outside -100..100"),
        ({"strengths": {"cost": math.nan}}, grpc.StatusCode.INVALID_ARGUMENT, "finite"),
        ({"strengths": {"culture": 50}}, grpc.StatusCode.FAILED_PRECONDITION, "another model"),
        ({"strengths": {"cost": 50}, "pins": {"cost": 9}}, grpc.StatusCode.NOT_FOUND, "9"),
        ({"strengths": {"cost": 50}, "pins": {"cost": "canary"}}, grpc.StatusCode.NOT_FOUND, "canary"),
        ({"pins": {"cost": 1}}, grpc.StatusCode.NOT_FOUND, "without a strength"),
        ({"top_p": 2.0}, grpc.StatusCode.INVALID_ARGUMENT, "top-p"),
        ({"temperature": -1.0}, grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
        ({"temperature": 1e308}, grpc.StatusCode.INVALID_ARGUMENT, "temperature must be within 0..2"),
        ({"temperature": math.nan}, grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
        ({"top_p": math.nan}, grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
        ({"max_new_tokens": 5000}, grpc.StatusCode.INVALID_ARGUMENT, "max_new_tokens"),
        ({"stop": ["x" * 100]}, grpc.StatusCode.INVALID_ARGUMENT, "stop strings"),
        ({"session_id": "no-such-session"}, grpc.StatusCode.NOT_FOUND, "no-such-session"),
    ],
)
def test_bad_requests_get_a_clear_status(
    client: InferenceClient, options: dict[str, object], code: grpc.StatusCode, match: str
) -> None:
    with pytest.raises(ClientError, match=match) as raised:
        client.generate(PROMPT, **options)
    assert raised.value.code == code


def test_prompt_longer_than_the_context_is_refused(client: InferenceClient) -> None:
    with pytest.raises(ClientError, match="context of 8192") as raised:
        client.generate("word " * 9000, max_new_tokens=8)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ClientError, match="role") as raised:
        client.generate([{"role": "robot", "content": "hi"}])
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_alias_move_reaches_new_requests_while_old_ones_keep_their_version(
    client: InferenceClient, registry: ServerThread
) -> None:
    old = client.stream(PROMPT, strengths={"cost": 60}, max_new_tokens=60)
    next(old)  # in flight, on the version "production" names now
    with RegistryClient(registry.target) as admin:
        admin.set_alias("cost", 2, "production")
        try:
            time.sleep(0.5)  # past the server's resolve TTL (0.2 s here)
            new = client.generate(PROMPT, strengths={"cost": 60}, max_new_tokens=4)
            assert new.applied == {"cost": (2, 60.0)}
            final = next(r for r in old if r.HasField("done")).done
            assert [(a.dimension, a.vector_set_version) for a in final.applied] == [("cost", 1)]
        finally:
            admin.set_alias("cost", 1, "production")


def test_a_session_supplies_history_and_strengths_and_gets_the_turn(
    client: InferenceClient, sessions: ServerThread
) -> None:
    with SessionClient(sessions.target) as session_client:
        session = session_client.create("ada", model="smollm2-135m", strengths={"cost": -70})
        with pytest.raises(ClientError, match="strengths come from the session"):
            client.generate("Where should we eat?", session_id=session.id, strengths={"cost": 10})
        with pytest.raises(ClientError, match="max_new_tokens"):
            client.generate("Where should we eat?", session_id=session.id, max_new_tokens=5000)
        answer = client.generate("Where should we eat?", session_id=session.id, max_new_tokens=12)
        assert answer.applied == {"cost": (1, -70.0)}
        second = client.generate("And after dinner?", session_id=session.id, max_new_tokens=12)
        assert second.done.prompt_tokens > answer.done.prompt_tokens + 12  # the history is in the prompt
        turns = session_client.get(session.id, include_turns=True).turns
    assert [t.text for t in turns] == ["Where should we eat?", answer.text, "And after dinner?", second.text]
    assert second.done.session_turn_index == turns[3].index
    used = turns[1].steering[0]
    assert (used.dimension, used.vector_set_version, used.strength) == ("cost", 1, -70.0)


def test_a_retried_session_request_records_its_turns_once(
    client: InferenceClient, sessions: ServerThread
) -> None:
    """The SDK resends a request's id when it retries; the turns it records are not doubled."""
    with SessionClient(sessions.target) as session_client:
        session = session_client.create("eve", model="smollm2-135m")
        options = {"session_id": session.id, "max_new_tokens": 6, "request_id": "generate-1"}
        first = client.generate("Where should we eat?", **options)  # type: ignore[arg-type]
        again = client.generate("Where should we eat?", **options)  # type: ignore[arg-type]
        with pytest.raises(ClientError, match="request_id must be at most 112") as raised:
            client.generate("Hi", session_id=session.id, request_id="r" * 113)
        turns = session_client.get(session.id, include_turns=True).turns
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [t.text for t in turns] == ["Where should we eat?", first.text]
    assert again.done.session_turn_index == first.done.session_turn_index == 2


def test_a_session_records_a_message_only_with_its_complete_answer(
    client: InferenceClient, sessions: ServerThread, inference: ServerThread
) -> None:
    """Issue 20: a refused request, a session naming another model and a cancelled stream
    record nothing, so the next prompt is never built from two user turns in a row."""
    engine = inference.server.services[0].servicer.engine
    with SessionClient(sessions.target) as session_client:
        session = session_client.create("noor", model="smollm2-135m")
        with pytest.raises(ClientError, match="context of 8192") as too_long:
            client.generate("a " * 9000, session_id=session.id, max_new_tokens=8)
        with pytest.raises(ClientError, match="limited to 32000 characters"):
            client.generate("word " * 9000, session_id=session.id, max_new_tokens=8)
        elsewhere = session_client.create("noor", model="gemma3-270m")
        with pytest.raises(ClientError, match="answers with model 'gemma3-270m'") as wrong_model:
            client.generate("Hello?", session_id=elsewhere.id, max_new_tokens=4)
        cancelled = client.stream("Plan a long trip to Peru.", session_id=session.id, max_new_tokens=1000)
        next(cancelled)
        cancelled.close()
        deadline = time.monotonic() + 10
        while engine.running and time.monotonic() < deadline:
            time.sleep(0.01)
        answer = client.generate("Where should we eat?", session_id=session.id, max_new_tokens=6)
        turns = session_client.get(session.id, include_turns=True).turns
        assert session_client.get(elsewhere.id).turn_count == 0
    assert too_long.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert wrong_model.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert [t.text for t in turns] == ["Where should we eat?", answer.text]


def test_two_messages_to_one_session_are_answered_one_after_the_other(
    client: InferenceClient, sessions: ServerThread
) -> None:
    """Issue 20: concurrent messages to one session are never interleaved; the later one waits
    and is answered from a history that holds the earlier exchange."""
    with SessionClient(sessions.target) as session_client:
        session = session_client.create("omar", model="smollm2-135m")
        questions = ["Where should we eat tonight?", "What should we see tomorrow?"]
        with ThreadPoolExecutor(2) as pool:
            answers = list(
                pool.map(lambda q: client.generate(q, session_id=session.id, max_new_tokens=24), questions)
            )
        turns = session_client.get(session.id, include_turns=True).turns
    assert [t.role for t in turns] == [1, 2, 1, 2]  # user, assistant, user, assistant
    by_question = dict(zip(questions, answers, strict=True))
    for user, assistant in zip(turns[::2], turns[1::2], strict=True):
        assert assistant.text == by_question[user.text].text
        assert assistant.index == by_question[user.text].done.session_turn_index
    first, second = (by_question[turns[0].text], by_question[turns[2].text])
    assert second.done.prompt_tokens > first.done.prompt_tokens + first.done.completion_tokens


def test_one_decoder_the_core_the_engine_and_the_service_agree(
    client: InferenceClient, smollm2: LoadedModel
) -> None:
    """A batch of steered and unsteered prompts gives the same greedy text through the core's
    ``generate``, the engine in-process, and the gRPC service; and the tokens match Hugging
    Face ``generate`` under the core's ``steer`` hooks, a decoder written by someone else."""
    cost = VectorSet.from_bytes(steering_set(smollm2, "cost", 1))  # what "production" names
    age = VectorSet.from_bytes(steering_set(smollm2, "age", 3))  # the latest age version
    prompts = [PROMPT, "Where should we go on Saturday?", PROMPT, "Suggest a present for my aunt."]
    rows: list[dict[str, float] | None] = [None, {"cost": 80}, {"cost": -60, "age": 40}, None]
    new_tokens = 12

    core = generate(smollm2, prompts, vector_sets=[cost, age], strengths=rows, max_new_tokens=new_tokens)

    prepared = prepare_vector_sets(smollm2, [cost, age])
    ends: queue.SimpleQueue[tuple[int, Event]] = queue.SimpleQueue()
    engine = InferenceEngine(ModelRunner(smollm2), EngineSettings(max_batch=4)).start()
    try:
        for index, (prompt, row) in enumerate(zip(prompts, rows, strict=True)):
            request = GenerationRequest(
                encode_prompt(smollm2.tokenizer, prompt),
                steering=fold_strengths(prepared, row),
                max_new_tokens=new_tokens,
            )
            engine.submit(request, lambda event, index=index: ends.put((index, event)))
        finished: dict[int, str] = {}
        while len(finished) < len(prompts):
            index, event = ends.get(timeout=120)
            if isinstance(event, Finished):
                finished[index] = event.text.strip()
    finally:
        engine.stop()
    in_process = [finished[index] for index in range(len(prompts))]

    with ThreadPoolExecutor(len(prompts)) as pool:  # concurrent, so that they share batches
        answers = pool.map(
            lambda pair: client.generate(pair[0], strengths=pair[1] or {}, max_new_tokens=new_tokens),
            zip(prompts, rows, strict=True),
        )
        served = [answer.text.strip() for answer in answers]

    encoded = [encode_prompt(smollm2.tokenizer, prompt) for prompt in prompts]
    input_ids, attention_mask = pad_token_ids(encoded, smollm2.tokenizer.pad_token_id, "left")
    with torch.no_grad(), steer(smollm2, [cost, age], rows):
        output = smollm2.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=smollm2.tokenizer.pad_token_id,
        )
    reference = [
        smollm2.tokenizer.decode(row, skip_special_tokens=True).strip()
        for row in output[:, input_ids.shape[1] :]
    ]
    assert core == in_process == served
    assert core == reference
    assert core[0] != core[2]  # the same prompt, unsteered and steered: the steering took effect


def test_engine_metrics_are_exported(client: InferenceClient, inference: ServerThread) -> None:
    client.generate(PROMPT, strengths={"cost": 30}, max_new_tokens=3)
    with urllib.request.urlopen(inference.metrics_url, timeout=10) as response:
        text = response.read().decode()
    for name in (
        "steerlab_inference_time_to_first_token_seconds_count",
        "steerlab_inference_generated_tokens_total",
        "steerlab_inference_batch_size_bucket",
        "steerlab_inference_queue_depth",
        "steerlab_inference_steering_cache_hits_total",
        "steerlab_inference_steering_cache_misses_total",
        'steerlab_inference_requests_total{code="OK",method="Generate"}',
        'steerlab_inference_requests_total{code="NOT_FOUND",method="Generate"}',
    ):
        assert name in text, name


@pytest.fixture()
def one_slot(smollm2: LoadedModel, registry: ServerThread) -> Iterator[ServerThread]:
    running = start_inference(smollm2, registry.target, engine=EngineSettings(max_batch=1, max_queue=1))
    yield running
    running.stop()


def test_queue_full_cancellation_and_deadlines_over_the_wire(one_slot: ServerThread) -> None:
    engine = one_slot.server.services[0].servicer.engine
    with InferenceClient(one_slot.target) as client:
        running = client.stream(PROMPT, max_new_tokens=1000)
        next(running)
        waiting: list[str] = []
        queued = threading.Thread(
            target=lambda: waiting.append(client.generate(PROMPT, max_new_tokens=2).text), daemon=True
        )
        queued.start()
        deadline = time.monotonic() + 10
        while engine.queue_depth == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(ClientError) as refused:
            client.generate(PROMPT, max_new_tokens=2)
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED

        running.close()  # the client cancels: the slot frees and the queued request runs
        queued.join(timeout=60)
        assert waiting and waiting[0]

        with pytest.raises(ClientError) as expired:
            client.generate(PROMPT, max_new_tokens=1000, timeout_s=0.5)
        assert expired.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        deadline = time.monotonic() + 5
        while engine.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.running == 0 and engine.queue_depth == 0
