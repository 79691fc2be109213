"""Generate the Python gRPC stubs from proto/ into services/steerlab/v1/.

    .venv/bin/python scripts/gen_proto.py            # write the stubs
    .venv/bin/python scripts/gen_proto.py --check    # exit 1 if the committed stubs are stale

The stubs are committed so that installing SteerLab never needs protoc; tests/test_proto.py
fails when they no longer match proto/.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = Path("steerlab") / "v1"
OUTPUT_ROOT = ROOT / "services"
INIT_TEXT = '"""Generated from proto/steerlab/v1 by scripts/gen_proto.py. Do not edit."""\n'


def generate(output_root: Path) -> list[Path]:
    """Run protoc into ``output_root``; return the generated files relative to it."""
    protos = sorted(str(path.relative_to(PROTO_ROOT)) for path in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    well_known = Path(protoc.__file__).parent / "_proto"
    plugin_dir = Path(sys.executable).parent
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={output_root}",
        f"--grpc_python_out={output_root}",
        f"--mypy_out={output_root}",
        f"--mypy_grpc_out={output_root}",
        *protos,
    ]
    (output_root / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    if protoc.main(args) != 0:
        raise SystemExit("gen_proto: protoc failed")
    (output_root / PACKAGE_DIR / "__init__.py").write_text(INIT_TEXT)
    return sorted(path.relative_to(output_root) for path in (output_root / PACKAGE_DIR).iterdir())


def stale_files() -> list[str]:
    """Generated files that are missing, extra or different in services/steerlab/v1/."""
    committed_dir = OUTPUT_ROOT / PACKAGE_DIR
    committed = {path.relative_to(OUTPUT_ROOT) for path in committed_dir.iterdir() if path.is_file()}
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
    target = OUTPUT_ROOT / PACKAGE_DIR
    shutil.rmtree(target, ignore_errors=True)
    for path in generate(OUTPUT_ROOT):
        print(f"wrote services/{path}")


if __name__ == "__main__":
    main()
