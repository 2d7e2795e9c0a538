#!/usr/bin/env python3
"""Benchmark `ragtune serve` at serve.parallel=1 and N; writes BENCHMARKS.md's section. See bench/serve_parallel.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serve_parallel import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
