#!/usr/bin/env python
"""Benchmark the vector index backends side by side (hnswlib, Milvus Lite) and write BENCHMARKS.md's section.

The same seeded vectors go into each backend through rag/index (the code an ingest runs): ingest rate
(add in batches, then save, as a writer does), single-query latency p50/p95 at rag.top_k-sized searches,
and recall@10 against exact numpy search. The vectors are clustered like sentence embeddings (unit-length
points around 1,000 centres) and each query is a stored point plus noise, as a question is near its passage.

    python scripts/bench_index.py                       # 100,000 x 384, writes BENCHMARKS.md
    python scripts/bench_index.py --n 20000 --out /tmp/bench.md   # a quick check
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragtune.bench_index import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
