#!/usr/bin/env python
"""Benchmark the vector index backends side by side (hnswlib, Milvus Lite); see bench/index.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.index import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
