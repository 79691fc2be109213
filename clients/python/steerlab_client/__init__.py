"""SteerLab's Python client: talks to the services over gRPC (needs grpcio and protobuf only).

from steerlab_client import RegistryClient

with RegistryClient("localhost:50051") as registry:
    pushed = registry.push("cost.safetensors", labels={"team": "search"})
    registry.set_alias("cost", pushed.version, "production")
    registry.pull("cost", alias="production", out="cost.safetensors")
"""

from .errors import ClientError
from .inference import Answer, InferenceClient
from .jobs import JobClient
from .registry import RegistryClient, VectorSetRef, parse_vector_set_ref
from .sessions import SessionClient

__all__ = [
    "Answer",
    "ClientError",
    "InferenceClient",
    "JobClient",
    "RegistryClient",
    "SessionClient",
    "VectorSetRef",
    "parse_vector_set_ref",
]
