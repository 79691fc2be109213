#!/usr/bin/env bash
# README command one: set up, then run the local demo on the built-in model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
exec .venv/bin/steerlab demo "$@"
