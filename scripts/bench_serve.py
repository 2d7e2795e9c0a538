#!/usr/bin/env python3
"""Benchmark `ragtune serve` against in-process answers and write BENCHMARKS.md's section; see bench/serve.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serve import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
