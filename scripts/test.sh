#!/usr/bin/env bash
# README command two (and CI): set up, start PostgreSQL and Redis if needed, lint, type-check
# the core and the services, and run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error

echo "== services"
bash scripts/services.sh

echo "== ruff"
.venv/bin/ruff check services clients tests scripts
echo "== mypy"
.venv/bin/mypy
echo "== import contracts"
.venv/bin/lint-imports
echo "== pytest"
.venv/bin/pytest "$@"
