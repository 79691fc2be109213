"""The all-in-one server (``steerlab up``): every service in one process on one port.

- ``server``: settings, building the shared gRPC server, registering the built-in dimensions;
- ``cli``: ``steerlab up``.
"""
