"""Running the inference service: settings from flags and ``STEERLAB_*`` variables, and the server."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self

from prometheus_client import CollectorRegistry
from pydantic import Field

from steerlab.serving import GrpcServer, ServerSettings, ServiceBinding, SteerLabSettings
from steerlab.serving.auth import open_key_store
from steerlab.settings import default_address
from steerlab.steering.engine import EngineSettings, InferenceEngine, ModelRunner
from steerlab.steering.models import load_model
from steerlab.storage import resolve_database_url
from steerlab_api.v1 import inference_pb2_grpc

from .cpu import pack_linear_weights
from .metrics import InferenceMetrics
from .placement import Placement
from .service import SERVICE_NAME, InferenceServicer, SessionLink, generated_tokens
from .vectors import RegistrySource, VectorSetCache, VectorSource

DEFAULT_REGISTRY = default_address("registry")
ENGINE_FIELDS = tuple(f.name for f in fields(EngineSettings))


class InferenceSettings(SteerLabSettings):
    """``steerlab inference serve``: ``STEERLAB_MODEL``, ``STEERLAB_REGISTRY``,
    ``STEERLAB_SESSIONS``, ``STEERLAB_TENSOR_PARALLEL``, ``STEERLAB_DEVICE``, ``STEERLAB_DTYPE``,
    the engine's ``STEERLAB_MAX_BATCH``, ``_MAX_BATCH_TOKENS``, ``_MAX_QUEUE``, ``_MAX_NEW_TOKENS``,
    and ``STEERLAB_INFERENCE_*``."""

    service: ClassVar[str] = "inference"
    nested_variables: ClassVar[Mapping[str, Mapping[str, str]]] = {
        "engine": {name: f"STEERLAB_{name.upper()}" for name in ENGINE_FIELDS}
    }

    model: str = "smollm2-135m"
    # The registry service (HOST:PORT) the vector sets come from, over its gRPC API.
    registry: str = DEFAULT_REGISTRY
    # A session service HOST:PORT for requests that name a session; empty: none.
    sessions: str = ""
    tensor_parallel: int = Field(default=1, ge=1)
    device: str = "auto"  # "auto": the GPU when there is one
    dtype: str = "auto"  # "auto": bfloat16 on a GPU, float32 on the CPU
    engine: EngineSettings = Field(default_factory=EngineSettings)
    default_max_new_tokens: int = Field(default=256, ge=1)
    resolve_ttl_s: float = Field(default=2.0, ge=0)
    # Where the API keys are checked (--auth keys): the platform's database.
    database_url: str = Field(default_factory=resolve_database_url)
    server: ServerSettings = Field(default_factory=ServerSettings)

    @classmethod
    def from_env(cls, **flags: Any) -> Self:
        """As :meth:`SteerLabSettings.from_env`; ``max_batch`` is the engine's."""
        max_batch = flags.pop("max_batch", None)
        if max_batch is not None:
            flags["engine"] = {"max_batch": max_batch}
        return super().from_env(**flags)

    def placement(self) -> Placement:
        """Where the model lives: all that loading it needs."""
        return Placement(self.model, self.device, self.dtype, self.tensor_parallel)

    def describe_vectors(self) -> str:
        return f"vectors from registry {self.registry}"


@dataclass
class InferenceServer:
    """The gRPC server and what it owns; ``close()`` after the server has stopped."""

    server: GrpcServer
    engine: InferenceEngine
    source: VectorSource

    def close(self) -> None:
        self.engine.stop()
        closer = getattr(self.source, "close", None)
        if closer is not None:
            closer()


def load_runner(settings: InferenceSettings) -> ModelRunner:
    """The model on this process's device, wrapped for serving (tensor parallel when asked)."""
    if settings.tensor_parallel > 1:
        from .distributed import start_tensor_parallel

        return start_tensor_parallel(settings.placement())
    placement = settings.placement()
    lm = load_model(placement.model, dtype=placement.torch_dtype(), device=placement.torch_device())
    pack_linear_weights(lm, batch_hint=settings.engine.max_batch)
    return ModelRunner(lm)


def vector_source(settings: InferenceSettings) -> VectorSource:
    """The registry service's vector sets, over its gRPC API."""
    from steerlab_client import RegistryClient

    client = RegistryClient(settings.registry, timeout_s=10.0, token=settings.server.token)
    return RegistrySource(client, ttl_s=settings.resolve_ttl_s)


def build_inference_server(
    settings: InferenceSettings,
    runner: ModelRunner | None = None,
    start_engine: bool = True,
    metrics_registry: CollectorRegistry | None = None,
) -> InferenceServer:
    """Load the model (unless ``runner`` is given) and build the server.

    The engine starts on a background thread, unless ``start_engine`` is False: then the caller
    runs ``engine.run_forever()`` on the thread that loaded the model (the faster choice).
    """
    runner = runner or load_runner(settings)
    registry = metrics_registry or CollectorRegistry()
    metrics = InferenceMetrics(registry)
    engine = InferenceEngine(runner, settings.engine, metrics)
    if start_engine:
        engine.start()
    source = vector_source(settings)
    lm = runner.lm
    vectors = VectorSetCache(
        source,
        lm.fingerprint,
        runner.device,
        runner.dtype,
        resolve_ttl_s=settings.resolve_ttl_s,
        metrics=metrics,
    )
    sessions = None
    if settings.sessions:
        from steerlab_client import SessionClient

        client = SessionClient(settings.sessions, timeout_s=30.0, token=settings.server.token)
        sessions = SessionLink(client, lm.name)
    servicer = InferenceServicer(
        engine, vectors, sessions, settings.default_max_new_tokens, settings.tensor_parallel
    )
    binding = ServiceBinding(
        SERVICE_NAME,
        servicer,
        inference_pb2_grpc.add_InferenceServiceServicer_to_server,
        metered={"Generate": generated_tokens},
    )
    keys = open_key_store(settings.server, settings.database_url)
    return InferenceServer(GrpcServer([binding], settings.server, registry, keys), engine, source)
