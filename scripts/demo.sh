#!/usr/bin/env bash
# Fresh machine to a real answer: set up, index the shipped example documents, ask a question.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export RAGTUNE_HOME="${RAGTUNE_HOME:-$PWD/.ragtune-demo}"
.venv/bin/ragtune ingest examples/docs
.venv/bin/ragtune ask "${1:-How much does a non-resident library card cost?}"
