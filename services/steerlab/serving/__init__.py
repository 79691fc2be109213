"""What every SteerLab gRPC service shares: the server (health, reflection, message limits),
Prometheus metrics, and the serving edge of the error vocabulary (error kind to status code).

The errors themselves live in :mod:`steerlab.steering.errors`."""

from .server import GrpcServer, ServiceBinding, run_until_signalled
from .settings import ServerSettings, SteerLabSettings
from .status import status_code, status_name

__all__ = [
    "GrpcServer",
    "ServerSettings",
    "ServiceBinding",
    "SteerLabSettings",
    "run_until_signalled",
    "status_code",
    "status_name",
]
