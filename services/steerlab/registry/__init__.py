"""The vector registry service: versioned steering vector sets with aliases, over gRPC.

Run it with ``steerlab registry serve``; talk to it with ``steerlab vectors ...`` or
:class:`steerlab_client.RegistryClient`.
"""

from .server import RegistrySettings, build_registry_server, registry_binding
from .service import RegistryServicer
from .store import AliasRecord, DimensionRecord, Page, RegistryStore, VectorSetRecord

__all__ = [
    "AliasRecord",
    "DimensionRecord",
    "Page",
    "RegistryServicer",
    "RegistrySettings",
    "RegistryStore",
    "VectorSetRecord",
    "build_registry_server",
    "registry_binding",
]
