"""The vector index benchmark (scripts/bench_index.py): seeded data, measurement per backend, the report.

The same seeded vectors go into each backend through rag/index (the code an ingest runs): ingest rate
(add in batches, then save, as a writer does), single-query latency p50/p95 at rag.top_k-sized searches,
and recall@10 against exact numpy search. The vectors are clustered like sentence embeddings (unit-length
points around 1,000 centres) and each query is a stored point plus noise, as a question is near its passage.

    python scripts/bench_index.py                       # 100,000 x 384, writes BENCHMARKS.md
    python scripts/bench_index.py --n 20000 --out /tmp/bench.md   # a quick check
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import busy_note, machine_rows, ms, pct, say, table
from models.config import IndexConfig
from models.errors import RagtuneError
from models.storage import write_section
from rag.index import create_index

ROOT = Path(__file__).resolve().parents[1]

TITLE = "## Vector index: hnswlib vs Milvus (`scripts/bench_index.py`)"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="report path (default: BENCHMARKS.md at repo root)")
    add("--n", type=int, default=100_000, help="vectors indexed (default 100000)")
    add("--dim", type=int, default=384, help="dimensions (default 384, minilm-l6's)")
    add("--queries", type=int, default=200, help="queries timed and scored (default 200)")
    add("--k", type=int, default=10, help="neighbours per query (default 10)")
    add("--batch", type=int, default=4096, help="vectors per add call (default 4096)")
    add("--backends", default="hnswlib,milvus", help="comma-separated index.backend values (default hnswlib,milvus)")
    add("--seed", type=int, default=0)
    return parser.parse_args()


def clustered(n: int, dim: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around 1,000 random centres, and queries near randomly chosen stored vectors."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim), dtype=np.float32)
    data = centres[rng.integers(0, 1000, n)] + 0.6 * rng.standard_normal((n, dim), dtype=np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    picked = data[rng.integers(0, n, queries)] + 0.03 * rng.standard_normal((queries, dim), dtype=np.float32)
    return data, picked / np.linalg.norm(picked, axis=1, keepdims=True)


def exact_top(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ data.T  # unit vectors: cosine
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def measure(backend: str, data: np.ndarray, queries: np.ndarray, truth: np.ndarray, args, work: Path) -> dict:
    config = IndexConfig(backend=backend, space="cosine", uri=str(work / "milvus.db") if backend == "milvus" else None)
    index = create_index(config, data.shape[1], capacity=len(data))
    started = time.perf_counter()
    for start in range(0, len(data), args.batch):
        index.add(data[start : start + args.batch], np.arange(start, min(start + args.batch, len(data))))
    (work / backend).mkdir()
    index.save(work / backend)  # hnswlib writes its file; Milvus flushes (seals) its segments
    ingest_s = time.perf_counter() - started
    for query in queries[:10]:  # warm-up: first searches load or build what a server keeps in memory
        index.search(query, args.k)
    latencies, hits = [], 0
    for query, want in zip(queries, truth):
        began = time.perf_counter()
        labels, _ = index.search(query, args.k)
        latencies.append(time.perf_counter() - began)
        hits += len(set(labels.tolist()) & set(want.tolist()))
    return {
        "ingest_s": ingest_s,
        "rate": len(data) / ingest_s,
        "p50": pct(latencies, 50),
        "p95": pct(latencies, 95),
        "recall": hits / truth.size,
    }


def report(args, command: str, results: dict[str, dict], busy: str, machine: list[tuple[str, str]]) -> str:
    base = results.get("hnswlib")
    rows = []
    for name, r in results.items():
        ratio = f"{r['p50'] / base['p50']:.2f}x" if base else "-"
        rate_ratio = f"{r['rate'] / base['rate']:.2f}x" if base else "-"
        rows.append(
            [
                name,
                f"{r['ingest_s']:.1f} s",
                f"{r['rate']:,.0f}",
                rate_ratio,
                ms(r["p50"]),
                ms(r["p95"]),
                ratio,
                f"{r['recall']:.3f}",
            ]
        )
    header = (
        "backend | ingest (add + save) | vectors/s | rate vs hnswlib | query p50 | query p95 | p50 vs hnswlib | "
        "recall@10"
    )
    return "\n\n".join(
        part
        for part in [
            TITLE,
            f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with:\n\n```\n{command}\n```",
            f"**Warning:** {busy}." if busy else "",
            "### Machine\n\n" + table("item | value", machine),
            f"### Results\n\n{args.n:,} unit vectors of {args.dim} dimensions (clustered around 1,000 centres, seed "
            f"{args.seed}), cosine, M=16, ef_construction=200, ef_search=64 (the defaults) for both; {args.queries} "
            f"queries (stored vectors plus noise), top {args.k}, one query at a time after 10 warm-up queries; "
            "recall@10 against exact numpy search. Milvus is Milvus Lite (embedded, a local .db file) through "
            "pymilvus: every call is a gRPC round trip to its embedded server.",
            table(header, rows),
        ]
        if part
    )


def main() -> int:
    args = parse_args()
    command = shlex.join(["python", *sys.orig_argv[1:]] if sys.orig_argv else sys.argv)
    busy = busy_note()
    machine = machine_rows(("hnswlib", "pymilvus", "milvus-lite", "numpy"))
    data, queries = clustered(args.n, args.dim, args.queries, args.seed)
    truth = exact_top(data, queries, args.k)
    results = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-index-") as work:
            for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
                say(f"[{backend}] indexing {args.n} x {args.dim}")
                results[backend] = measure(backend, data, queries, truth, args, Path(work))
                say(f"[{backend}] {results[backend]}")
    except RagtuneError as exc:
        print(f"bench_index: error: {exc}", file=sys.stderr)
        return 2
    write_section(args.out, "bench_index", report(args, command, results, busy, machine), title="# ragtune benchmarks")
    print(f"wrote {args.out}")
    return 0
