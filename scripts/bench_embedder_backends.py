#!/usr/bin/env python
"""Benchmark the local embedder backends side by side and write BENCHMARKS.md; see bench/embedder_backends.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.embedder_backends import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
