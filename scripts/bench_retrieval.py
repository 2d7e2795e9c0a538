#!/usr/bin/env python
"""Benchmark retrieval on long documents (squad-long) and write the figures to BENCHMARKS.md.

Per retrieval setting (every registered retriever, hybrid weights, with and without a configured
reranker; with and without contextual chunks where the config has the key): document and evidence
hit@1/5/10 and MRR with 95% intervals, paired differences on evidence hit@5, query latency, latency at
--scale chunks, and ingest throughput against raw SentenceTransformer.encode. The logic is in
ragtune/compare/bench_retrieval.py.

    python scripts/bench_retrieval.py                                           # everything, writes BENCHMARKS.md
    python scripts/bench_retrieval.py --docs 40 --limit 100 --retrievers dense \\
        --scale 20000 --throughput-docs 10 --out /tmp/bench.md                  # a quick check

Ingesting all 490 articles takes several minutes on 2 cores; the index is kept under --work and reused
while its inputs (document bytes, embedder, rag and index settings) are unchanged.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.errors import RagtuneError  # noqa: E402
from models.storage import write_section  # noqa: E402
from ragtune.app import quiet_libraries  # noqa: E402
from ragtune.compare.bench_retrieval import Options, run  # noqa: E402

DATASET = ROOT.parent / "shared" / "datasets" / "squad-long"
WORK = Path.home() / ".cache" / "ragtune-bench" / "retrieval"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="report path (default: BENCHMARKS.md at repo root)")
    add("--dataset", type=Path, default=DATASET, help=f"squad-long folder (default {DATASET})")
    add("--work", type=Path, default=WORK, help=f"indexes and corpus copies, reused between runs (default {WORK})")
    add("--docs", type=int, help="articles to ingest: half gold articles, half distractors, seeded (default all)")
    add("--limit", type=int, help="questions to ask, a seeded sample (default all whose gold article is ingested)")
    add("--seed", type=int, default=0, help="seed of the article and question samples and of the copies (default 0)")
    add("--retrievers", default="", help="comma-separated retrievers to score (default every registered one)")
    add("--scale", type=int, default=100_000, help="chunks in the latency-at-scale index; 0 skips it (default 100000)")
    add("--scale-queries", type=int, default=200, help="questions timed at scale (default 200)")
    add("--noise", type=float, default=0.62, help="vector noise norm of a perturbed copy (default 0.62)")
    add("--drop", type=float, default=0.3, help="share of a perturbed copy's words dropped (default 0.3)")
    add("--throughput-docs", type=int, default=40, help="articles for the ingest throughput check; 0 skips it")
    add("--throughput-rounds", type=int, default=2, help="alternating ingest / raw encode rounds (default 2)")
    add("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    quiet_libraries()
    options = Options(
        dataset=args.dataset,
        work=args.work,
        docs=args.docs,
        limit=args.limit,
        seed=args.seed,
        retrievers=tuple(r.strip() for r in args.retrievers.split(",") if r.strip()),
        scale=args.scale,
        scale_queries=args.scale_queries,
        noise=args.noise,
        drop=args.drop,
        throughput_docs=args.throughput_docs,
        throughput_rounds=args.throughput_rounds,
        overrides=tuple(args.overrides),
        command=shlex.join(["python", *sys.orig_argv[1:]] if sys.orig_argv else sys.argv),
    )
    try:
        report = run(options)
    except RagtuneError as exc:
        print(f"bench_retrieval: error: {exc}", file=sys.stderr)
        return 2
    write_section(args.out, "bench_retrieval", report, title="# ragtune benchmarks")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
