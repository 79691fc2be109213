"""The committed gRPC stubs match proto/: a changed .proto without regenerated stubs fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_stubs_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_contract_follows_the_conventions() -> None:
    """DESIGN.md section 4: package steerlab.v1, services end in Service, enums start UNSPECIFIED."""
    import importlib
    import pkgutil

    import steerlab_api.v1

    names = [m.name for m in pkgutil.iter_modules(steerlab_api.v1.__path__) if m.name.endswith("_pb2")]
    assert sorted(names) == ["inference_pb2", "jobs_pb2", "registry_pb2", "sessions_pb2", "vectors_pb2"]
    for name in names:
        descriptor = importlib.import_module(f"steerlab_api.v1.{name}").DESCRIPTOR
        assert descriptor.package == "steerlab.v1"
        for service in descriptor.services_by_name.values():
            assert service.name.endswith("Service")
            for method in service.methods:
                assert method.input_type.name == f"{method.name}Request"
                assert method.output_type.name == f"{method.name}Response"
        for enum in descriptor.enum_types_by_name.values():
            assert enum.values[0].number == 0 and enum.values[0].name.endswith("_UNSPECIFIED")
