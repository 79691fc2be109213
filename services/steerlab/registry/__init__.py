"""The vector registry service: versioned steering vector sets with aliases, over gRPC.

- ``store``: :class:`~steerlab.registry.store.RegistryStore`, the data on PostgreSQL or SQLite;
- ``service``: the ``steerlab.v1.RegistryService`` servicer;
- ``server``: settings and :func:`~steerlab.registry.server.build_registry_server`;
- ``cli``: ``steerlab registry serve`` and ``steerlab vectors ...``.
"""
