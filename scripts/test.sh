#!/usr/bin/env bash
# Fresh machine to a passing suite: set up with dev tools, lint, format check, all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
