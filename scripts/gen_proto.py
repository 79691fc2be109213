"""Generate the Python gRPC stubs from proto/ into clients/python/steerlab_api/v1/.

    .venv/bin/python scripts/gen_proto.py            # write the stubs
    .venv/bin/python scripts/gen_proto.py --check    # exit 1 if the committed stubs are stale

The stubs are committed so that installing SteerLab never needs protoc; tests/test_proto.py
fails when they no longer match proto/. They form their own package, ``steerlab_api``, beside
the client SDK, so that the SDK installs with grpcio and protobuf only; protoc would name the
package after the proto directory (``steerlab.v1``), so its imports are rewritten.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_DIR = Path("steerlab") / "v1"
PACKAGE_DIR = Path("steerlab_api") / "v1"
OUTPUT_ROOT = ROOT / "clients" / "python"
INIT_TEXT = '"""Generated from proto/steerlab/v1 by scripts/gen_proto.py. Do not edit."""\n'
# Python module references protoc writes: ``from steerlab_api.v1 import x_pb2``, ``steerlab_api.v1.x_pb2``.
MODULE_REFERENCE = re.compile(r"\bsteerlab\.v1(?= import |\.\w+_pb2\b)")


def generate(output_root: Path) -> list[Path]:
    """Run protoc, rename the package to ``steerlab_api.v1``, write it under ``output_root``;
    return the generated files relative to ``output_root``."""
    protos = sorted(str(path.relative_to(PROTO_ROOT)) for path in (PROTO_ROOT / PROTO_DIR).glob("*.proto"))
    well_known = Path(protoc.__file__).parent / "_proto"
    plugin_dir = Path(sys.executable).parent
    target = output_root / PACKAGE_DIR
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
            f"--python_out={scratch}",
            f"--grpc_python_out={scratch}",
            f"--mypy_out={scratch}",
            f"--mypy_grpc_out={scratch}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("gen_proto: protoc failed")
        for generated in sorted((Path(scratch) / PROTO_DIR).iterdir()):
            renamed = MODULE_REFERENCE.sub("steerlab_api.v1", generated.read_text())
            (target / generated.name).write_text(renamed)
    for package in (target, target.parent):
        (package / "__init__.py").write_text(INIT_TEXT)
    (target.parent / "py.typed").write_text("")  # PEP 561: the .pyi stubs are the types
    return sorted(path.relative_to(output_root) for path in target.parent.rglob("*") if path.is_file())


def stale_files() -> list[str]:
    """Generated files that are missing, extra or different in clients/python/steerlab_api/."""
    committed_dir = OUTPUT_ROOT / PACKAGE_DIR.parent
    committed = {
        path.relative_to(OUTPUT_ROOT)
        for path in committed_dir.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    with tempfile.TemporaryDirectory() as scratch:
        fresh = set(generate(Path(scratch)))
        changed = {
            path
            for path in fresh & committed
            if not filecmp.cmp(Path(scratch) / path, OUTPUT_ROOT / path, shallow=False)
        }
    return sorted(str(path) for path in (fresh ^ committed) | changed)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only report stale stubs")
    args = parser.parse_args()
    if args.check:
        stale = stale_files()
        if stale:
            print("stale generated stubs (run scripts/gen_proto.py): " + ", ".join(stale))
            raise SystemExit(1)
        print("generated stubs are up to date")
        return
    shutil.rmtree(OUTPUT_ROOT / PACKAGE_DIR.parent, ignore_errors=True)
    for path in generate(OUTPUT_ROOT):
        print(f"wrote clients/python/{path}")


if __name__ == "__main__":
    main()
