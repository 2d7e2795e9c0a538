#!/usr/bin/env bash
# On a connected machine: build the offline bundle (wheels, lock, SBOM, install.sh) into DIR.
#   scripts/bundle.sh -o DIR [--target cpu|cuda] [--preset NAME ...]     then, offline: bash DIR/install.sh VENV
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/ragtune ] || scripts/setup.sh
exec .venv/bin/ragtune bundle "$@"
