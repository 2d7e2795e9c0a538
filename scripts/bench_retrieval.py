#!/usr/bin/env python
"""Benchmark retrieval on long documents and write the figures to BENCHMARKS.md; see bench/retrieval.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.retrieval import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
