"""Running the inference service: settings from flags and ``STEERLAB_*`` variables, and the server."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from steerlab.serving import GrpcServer, ServerSettings, ServiceBinding
from steerlab.settings import DEFAULT_PORTS, chosen, int_env
from steerlab.steering.engine import EngineSettings, InferenceEngine, ModelRunner
from steerlab.steering.models import load_model
from steerlab_api.v1 import inference_pb2_grpc

from .cpu import pack_linear_weights
from .metrics import InferenceMetrics
from .placement import Placement
from .service import SERVICE_NAME, InferenceServicer, SessionLink
from .vectors import RegistrySource, VectorSetCache, VectorSource

DEFAULT_PORT, DEFAULT_METRICS_PORT = DEFAULT_PORTS["inference"]
DEFAULT_REGISTRY = f"localhost:{DEFAULT_PORTS['registry'].grpc}"


@dataclass(frozen=True)
class InferenceSettings:
    model: str = "smollm2-135m"
    # The registry service (HOST:PORT) the vector sets come from, over its gRPC API.
    registry: str = DEFAULT_REGISTRY
    # A session service HOST:PORT for requests that name a session; empty: none.
    sessions: str = ""
    tensor_parallel: int = 1
    device: str = "auto"  # "auto": the GPU when there is one
    dtype: str = "auto"  # "auto": bfloat16 on a GPU, float32 on the CPU
    engine: EngineSettings = field(default_factory=EngineSettings)
    default_max_new_tokens: int = 256
    resolve_ttl_s: float = 2.0
    server: ServerSettings = field(
        default_factory=lambda: ServerSettings(port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT)
    )

    @classmethod
    def from_env(
        cls,
        model: str | None = None,
        registry: str | None = None,
        sessions: str | None = None,
        tensor_parallel: int | None = None,
        max_batch: int | None = None,
        host: str | None = None,
        port: int | None = None,
        metrics_port: int | None = None,
    ) -> InferenceSettings:
        """Flags win over ``STEERLAB_MODEL``, ``STEERLAB_REGISTRY``, ``STEERLAB_SESSIONS``,
        ``STEERLAB_TENSOR_PARALLEL``, ``STEERLAB_MAX_BATCH``, ``STEERLAB_MAX_BATCH_TOKENS``,
        ``STEERLAB_MAX_QUEUE``, ``STEERLAB_DEVICE``, ``STEERLAB_DTYPE`` and the
        ``STEERLAB_INFERENCE_*`` server variables."""
        engine = EngineSettings(
            max_batch=max_batch or int_env("STEERLAB_MAX_BATCH", EngineSettings.max_batch),
            max_batch_tokens=int_env("STEERLAB_MAX_BATCH_TOKENS", EngineSettings.max_batch_tokens),
            max_queue=int_env("STEERLAB_MAX_QUEUE", EngineSettings.max_queue),
            max_new_tokens=int_env("STEERLAB_MAX_NEW_TOKENS", EngineSettings.max_new_tokens),
        )
        return cls(
            model=model or os.environ.get("STEERLAB_MODEL", "smollm2-135m"),
            registry=chosen(registry, "STEERLAB_REGISTRY", DEFAULT_REGISTRY),
            sessions=chosen(sessions, "STEERLAB_SESSIONS", ""),
            tensor_parallel=tensor_parallel or int_env("STEERLAB_TENSOR_PARALLEL", 1),
            device=os.environ.get("STEERLAB_DEVICE", "auto"),
            dtype=os.environ.get("STEERLAB_DTYPE", "auto"),
            engine=engine,
            server=ServerSettings.from_env(
                "inference",
                DEFAULT_PORT,
                DEFAULT_METRICS_PORT,
                host=host,
                port=port,
                metrics_port=metrics_port,
            ),
        )

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

    return RegistrySource(RegistryClient(settings.registry, timeout_s=10.0, token=settings.server.token))


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
        SERVICE_NAME, servicer, inference_pb2_grpc.add_InferenceServiceServicer_to_server
    )
    return InferenceServer(GrpcServer([binding], settings.server, registry), engine, source)
