"""`steerlab sessions serve` as an operator runs it, with the registry as its dimension source."""

from __future__ import annotations

from pathlib import Path

from service_support import ServiceProcess, free_port, fresh_postgres_database

from steerlab_client import RegistryClient, SessionClient


def test_sessions_serve_uses_the_registry_and_stops_cleanly(tmp_path: Path) -> None:
    with fresh_postgres_database() as url:
        registry = ServiceProcess("registry", url, tmp_path, free_port())
        sessions = ServiceProcess("sessions", url, tmp_path, free_port(), "--registry", registry.target)
        try:
            assert "steerlab sessions serving on 127.0.0.1:" in sessions.banner
            with RegistryClient(registry.target) as client:
                client.create_dimension("noise", "quiet", "lively")
            with SessionClient(sessions.target) as client:
                session = client.create("ana", "smollm2-135m", mode="learn", strengths={"noise": -30})
                reply = client.add_user_turn(session.id, "This is far too expensive, find something cheaper.")
                assert reply.session.strengths["cost"] < 0  # LEARN ran in the service process
                assert reply.session.strengths["noise"] == -30
        finally:
            assert sessions.stop() == 0
            assert registry.stop() == 0
