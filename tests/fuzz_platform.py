"""The four SteerLab services (registry, sessions, jobs, inference) for fuzzing: each its own
server in this process, on a real socket, all on one database (SQLite or a fresh PostgreSQL),
without API keys, seeded with data that fuzzed requests can name (plausible values: live
session ids, job ids, page tokens, vector set files), and the runs that fuzz one RPC.

Deliberate choices, so that a run is fast and only the services are under test:
- the model is the small random Llama of tests/conftest.py (``tiny-llama``), with at most 8 new
  tokens per request (4 by default);
- the job service has no worker: submitted jobs stay queued and nothing is extracted;
- LEARN reads replies with the default (intent) reader over a hashing bag-of-words embedder,
  not the tuned MiniLM, which trains for minutes and embeds its whole bank again for every new
  set of dimensions (fuzzed CreateDimension calls make many).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import torch
from conftest import make_tiny_model, small_dataset
from fuzz_support import (
    Hints,
    Rpc,
    Strategy,
    Tally,
    call,
    describe,
    describe_bytes,
    fuzz,
    health,
    page_tokens,
    requests,
    undecodable,
)
from hypothesis import strategies as st
from service_support import ServerThread, fresh_postgres_database, make_vector_set

from steerlab.inference.server import InferenceSettings, build_inference_server
from steerlab.jobs.server import JobServer, JobServiceSettings
from steerlab.jobs.worker import WorkerSettings
from steerlab.serving import ServerSettings
from steerlab.sessions.learn import make_interpreter
from steerlab.sessions.server import SessionSettings, build_session_server
from steerlab.steering import LoadedModel
from steerlab.steering.config import METHODS, SITES, TOKEN_SELECTIONS
from steerlab.steering.engine import EngineSettings, ModelRunner
from steerlab.steering.models import builtin_model_dir
from steerlab_api.v1 import (
    jobs_pb2,
    jobs_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    sessions_pb2,
    sessions_pb2_grpc,
    vectors_pb2,
)
from steerlab_client.channel import DEFAULT_MAX_MESSAGE_BYTES, Tls, open_channel

BACKENDS = ("sqlite", "postgresql")
REGISTRY, SESSIONS = "steerlab.v1.RegistryService", "steerlab.v1.SessionService"
JOBS, INFERENCE = "steerlab.v1.JobService", "steerlab.v1.InferenceService"
SERVER = ServerSettings(port=0, metrics_port=None, auth="none")
SEED_TIMEOUT_S = 60.0
DIMENSIONS = ("cost", "ambiance", "age", "time", "culture", "thrift")
TEXTS = (
    "Plan a dinner in Rome for two.",
    "That is way too expensive, something cheaper please.",
    "Perfect, thank you!",
    "More luxury and a quieter place, and nothing for kids.",
)


def examples_per_rpc(default: int = 25) -> int:
    """``STEERLAB_FUZZ_EXAMPLES``: Hypothesis examples per RPC, backend and kind of request."""
    return int(os.environ.get("STEERLAB_FUZZ_EXAMPLES", default))


def deadline_s(default: float = 15.0) -> float:
    """``STEERLAB_FUZZ_DEADLINE_S``: how long one call may take before it counts as a hang."""
    return float(os.environ.get("STEERLAB_FUZZ_DEADLINE_S", default))


class HashingEmbedder:
    """Unit-normalised bag-of-words vectors of hashed words: LEARN's embedder, at no cost."""

    name = "fuzz-hashing"
    width = 64

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        vectors = torch.full((len(texts), self.width), 1e-3)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                vectors[row, zlib.crc32(word.encode(errors="replace")) % self.width] += 1.0
        return torch.nn.functional.normalize(vectors, dim=-1)


def fuzz_model() -> LoadedModel:
    """The small random Llama the platform tests serve, on SmolLM2's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(builtin_model_dir("smollm2-135m")))
    return make_tiny_model("llama", tokenizer)


@contextmanager
def backend_database(backend: str, directory: Path) -> Iterator[str]:
    """A database URL: a new SQLite file in ``directory``, or a fresh PostgreSQL database."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'steerlab.db'}"
        return
    with fresh_postgres_database() as url:
        yield url


# -- the servers -------------------------------------------------------------------------------


def _sessions(database_url: str, registry: str) -> ServerThread:
    settings = SessionSettings(database_url=database_url, registry=registry, server=SERVER)
    server, manager = build_session_server(settings, make_interpreter("intent", HashingEmbedder()))
    return ServerThread(server=server, closing=manager.store.close)


def _jobs(database_url: str) -> ServerThread:
    """The job service without its worker or lease monitor: jobs are recorded and stay queued."""
    settings = JobServiceSettings(
        worker=WorkerSettings(database_url=database_url, broker_url=""), server=SERVER, watch_poll_s=0.2
    )
    jobs = JobServer(settings)
    return ServerThread(server=jobs.server, closing=jobs.close)


def _inference(database_url: str, lm: LoadedModel, registry: str, sessions: str) -> ServerThread:
    settings = InferenceSettings(
        model=lm.name,
        registry=registry,
        sessions=sessions,
        engine=EngineSettings(max_batch=4, max_new_tokens=8),
        default_max_new_tokens=4,
        resolve_ttl_s=0.2,
        database_url=database_url,
        server=SERVER,
    )
    served = build_inference_server(settings, runner=ModelRunner(lm))
    return ServerThread(server=served.server, closing=served.close)


def start_servers(database_url: str, lm: LoadedModel) -> dict[str, ServerThread]:
    """Registry, sessions (dimensions from the registry), jobs and inference, by service name."""
    registry = ServerThread(database_url)
    sessions = _sessions(database_url, registry.target)
    return {
        REGISTRY: registry,
        SESSIONS: sessions,
        JOBS: _jobs(database_url),
        INFERENCE: _inference(database_url, lm, registry.target, sessions.target),
    }


# -- what fuzzed requests can name ------------------------------------------------------------


def static_hints() -> dict[str, Strategy]:
    """Plausible values by field name (``Message.field`` first), known without any server."""
    dimensions, texts = st.sampled_from(DIMENSIONS), st.sampled_from(TEXTS)
    hints: dict[str, Strategy] = {
        name: dimensions for name in ("dimension", "dimensions", "strengths.key", "pins.key")
    }
    hints |= {name: texts for name in ("content", "text", "comment", "answer", "user_texts", "description")}
    hints |= {
        "ExtractionSpec.dimension": st.sampled_from(DIMENSIONS[:5]),
        "Dimension.name": st.from_regex(r"[a-z][a-z0-9_-]{0,15}", fullmatch=True),
        "negative_pole": st.sampled_from(("spend", "quiet")),
        "positive_pole": st.sampled_from(("save", "lively")),
        "strengths.value": st.floats(-100, 100),
        "alias": st.sampled_from(("production", "staging")),
        "ChatMessage.role": st.sampled_from(("user", "system", "assistant")),
        "tenant": st.sampled_from(("", "default")),
        "user_id": st.sampled_from(("ana", "bob")),
        "author": st.just("ana"),
        "updated_by": st.just("ana"),
        "method": st.sampled_from(METHODS),
        "site": st.sampled_from(SITES),
        "token_selection": st.sampled_from(TOKEN_SELECTIONS),
        "page_size": st.sampled_from((0, 1, 2, 1000, 1001)),
        "version": st.integers(1, 3),
        "vector_set_version": st.integers(1, 3),
        "round": st.integers(1, 3),
        "rounds": st.integers(1, 5),
        "turn_index": st.integers(0, 3),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "top_k": st.integers(0, 50),
        "max_new_tokens": st.integers(0, 8),
        "stop": st.sampled_from(("\n", ".", "Rome")),
        "num_tokens": st.integers(1, 64),
        "perplexity_bound": st.floats(1, 3),
        "learning_rate": st.floats(0, 50),
        "labels.key": st.sampled_from(("team", "env")),
        "labels.value": st.sampled_from(("ml", "prod")),
    }
    return hints


def _vector_file(lm: LoadedModel | None, dimension: str, seed: int) -> bytes:
    """A valid vector set file: for ``lm``, or (None) for another model (``tiny-a``)."""
    if lm is None:
        return make_vector_set(dimension, seed=seed).to_bytes()
    model = lm.fingerprint
    return make_vector_set(dimension, seed=seed, model=model, model_name=lm.name, alpha_max=4.0).to_bytes()


def _dataset() -> bytes:
    """A custom dimension's dataset (JSON Lines), as SubmitExtraction uploads it."""
    import json

    dataset = small_dataset(10)
    header = {**dataset.dimension.to_dict(), "dimension": "thrift"}
    lines = [
        header,
        *({"prompt": e.prompt, "completion": e.completion, "label": e.label} for e in dataset.examples),
    ]
    return "\n".join(json.dumps(line) for line in lines).encode()


def seed_registry(channel: grpc.Channel, lm: LoadedModel) -> tuple[dict[str, Strategy], str]:
    """Vector sets for the served model (cost v1, v2 with v1 in production; age v1), one for
    another model, a custom dimension; returns the hints they make and a page token."""
    stub = registry_pb2_grpc.RegistryServiceStub(channel)
    files = [_vector_file(lm, "cost", 1), _vector_file(lm, "cost", 2), _vector_file(lm, "age", 3)]
    files.append(_vector_file(None, "culture", 4))
    for data in files:
        stub.CreateVectorSet(registry_pb2.CreateVectorSetRequest(file=data), timeout=SEED_TIMEOUT_S)
    alias = registry_pb2.SetAliasRequest(dimension="cost", model=lm.name, alias="production", version=1)
    stub.SetAlias(alias, timeout=SEED_TIMEOUT_S)
    thrift = vectors_pb2.Dimension(name="thrift", negative_pole="spend", positive_pole="save")
    stub.CreateDimension(registry_pb2.CreateDimensionRequest(dimension=thrift), timeout=SEED_TIMEOUT_S)
    page = stub.ListVectorSets(registry_pb2.ListVectorSetsRequest(page_size=1), timeout=SEED_TIMEOUT_S)
    digest = lm.fingerprint.weights_digest
    models = (lm.name, "smollm2-135m", digest, digest[:12], "tiny-a", "/models/absent")
    return {"file": st.sampled_from(files), "model": st.sampled_from(models)}, page.next_page_token


def seed_sessions(channel: grpc.Channel, model: str) -> tuple[dict[str, Strategy], str]:
    """Three sessions of ana's: SELECT with strengths, LEARN with a user and an assistant turn,
    and one calibrating cost; returns their ids and a page token as hints."""
    stub = sessions_pb2_grpc.SessionServiceStub(channel)

    def create(**fields: Any) -> str:
        request = sessions_pb2.CreateSessionRequest(user_id="ana", model=model, **fields)
        return str(stub.CreateSession(request, timeout=SEED_TIMEOUT_S).session.id)

    select = create(strengths={"cost": 40.0})
    learn = create(mode=sessions_pb2.INTERFACE_MODE_LEARN)
    for role, text in (
        (sessions_pb2.ROLE_USER, TEXTS[0]),
        (sessions_pb2.ROLE_ASSISTANT, "Try the trattoria."),
    ):
        turn = sessions_pb2.AppendTurnRequest(session_id=learn, role=role, text=text)
        stub.AppendTurn(turn, timeout=SEED_TIMEOUT_S)
    calibrate = create()
    start = sessions_pb2.StartCalibrationRequest(session_id=calibrate, dimensions=["cost"], rounds=3)
    stub.StartCalibration(start, timeout=SEED_TIMEOUT_S)
    page = stub.ListSessions(
        sessions_pb2.ListSessionsRequest(user_id="ana", page_size=1), timeout=SEED_TIMEOUT_S
    )
    return {"session_id": st.sampled_from((select, learn, calibrate))}, page.next_page_token


def seed_jobs(channel: grpc.Channel) -> tuple[dict[str, Strategy], str]:
    """Two queued jobs (a built-in dimension, a custom dataset) and a cancelled one; returns
    their ids and the dataset as hints, and a page token."""
    stub = jobs_pb2_grpc.JobServiceStub(channel)
    specs = (
        jobs_pb2.ExtractionSpec(model="smollm2-135m", dimension="cost"),
        jobs_pb2.ExtractionSpec(model="smollm2-135m", dataset=_dataset()),
        jobs_pb2.ExtractionSpec(model="smollm2-135m", dimension="age"),
    )
    submitted = [
        stub.SubmitExtraction(jobs_pb2.SubmitExtractionRequest(spec=spec), timeout=SEED_TIMEOUT_S).job.id
        for spec in specs
    ]
    stub.CancelJob(jobs_pb2.CancelJobRequest(id=submitted[-1]), timeout=SEED_TIMEOUT_S)
    page = stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=1), timeout=SEED_TIMEOUT_S)
    return {"id": st.sampled_from(submitted), "dataset": st.just(_dataset())}, page.next_page_token


# -- the platform ------------------------------------------------------------------------------


@dataclass
class FuzzPlatform:
    """The running services of one backend, a channel to each, and the current hints."""

    backend: str
    lm: LoadedModel
    servers: dict[str, ServerThread]
    channels: dict[str, grpc.Channel] = field(default_factory=dict)
    hints: Hints = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, server in self.servers.items():
            self.channels[name] = open_channel(server.target, DEFAULT_MAX_MESSAGE_BYTES, Tls())
        self.registry_hints, self.registry_token = seed_registry(self.channels[REGISTRY], self.lm)
        self.refresh()

    def refresh(self) -> None:
        """New sessions and jobs to name, in case fuzzed calls deleted or ended the last ones.

        Every page token a service handed out (and mutations of them) goes to every list call.
        """
        sessions, sessions_token = seed_sessions(self.channels[SESSIONS], self.lm.name)
        jobs, jobs_token = seed_jobs(self.channels[JOBS])
        tokens = page_tokens([self.registry_token, sessions_token, jobs_token])
        request_ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=36)
        extra = {"page_token": tokens, "request_id": request_ids}
        self.hints = static_hints() | self.registry_hints | sessions | jobs | extra

    def health(self) -> dict[str, str]:
        """Each service's health status name."""
        return {name: health(channel) for name, channel in self.channels.items()}

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
        for name in reversed(list(self.servers)):
            self.servers[name].stop()


def start_platform(backend: str, database_url: str, lm: LoadedModel) -> FuzzPlatform:
    """Start the servers and seed them; stops them again if seeding fails."""
    servers = start_servers(database_url, lm)
    try:
        return FuzzPlatform(backend, lm, servers)
    except BaseException:
        for server in reversed(list(servers.values())):
            server.stop()
        raise


# -- fuzzing one RPC ---------------------------------------------------------------------------


def _recorder(
    platform: FuzzPlatform, rpc: Rpc, label: str, tally: Tally, deadline: float
) -> Callable[[bytes, str], None]:
    channel = platform.channels[rpc.service]

    def send(payload: bytes, request: str) -> None:
        tally.record(label, platform.backend, payload, request, call(channel, rpc, payload, deadline))

    return send


def fuzz_requests(
    platform: FuzzPlatform, rpc: Rpc, tally: Tally, examples: int, deadline: float, derandomize: bool = True
) -> str:
    """Send ``examples`` drawn requests of ``rpc``; returns its label in ``tally``."""
    platform.refresh()
    send = _recorder(platform, rpc, rpc.label, tally, deadline)
    fuzz(
        requests(rpc.request, platform.hints),
        lambda m: send(m.SerializeToString(), describe(m)),
        examples,
        derandomize,
    )
    return rpc.label


def fuzz_undecodable(
    platform: FuzzPlatform, rpc: Rpc, tally: Tally, examples: int, deadline: float, derandomize: bool = True
) -> str:
    """Send ``examples`` byte strings that are no valid request of ``rpc``; returns its label."""
    label = f"{rpc.label} (bytes)"
    send = _recorder(platform, rpc, label, tally, deadline)
    fuzz(
        undecodable(rpc.request, platform.hints), lambda b: send(b, describe_bytes(b)), examples, derandomize
    )
    return label
