#!/usr/bin/env bash
# Fresh machine to a passing suite: set up with dev tools, lint, format check, all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# The chat page test needs a browser: as root, install Debian's chromium; without it that test skips.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
        echo "test.sh: could not install chromium; the browser test (tests/integration/test_serve_page.py) will be skipped"
    fi
fi
.venv/bin/python -m pytest "$@"
