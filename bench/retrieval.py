"""Benchmark retrieval on long documents (squad-long) and write the figures to BENCHMARKS.md.

1. Accuracy per retrieval setting on squad-long (doc and evidence hit@1/5/10, MRR, 95% intervals), per
   contextual variant where the config has the key, with query latency; the settings are every registered
   retriever, hybrid weights, with and without a configured reranker.
2. Paired differences on evidence hit@5: hybrid - dense, contextual - plain.
3. Query latency at a larger index (--scale chunks: real chunks plus perturbed copies), without reranking.
4. Ingest throughput against raw `SentenceTransformer.encode` of the same chunks (target >= 0.9x).

    python scripts/bench_retrieval.py                                           # everything, writes BENCHMARKS.md
    python scripts/bench_retrieval.py --docs 40 --limit 100 --retrievers dense \\
        --scale 20000 --throughput-docs 10 --out /tmp/bench.md                  # a quick check

Ingesting all 490 articles takes several minutes on 2 cores; the index is kept under --work (its
RAGTUNE_HOME) and reused while its inputs (document bytes, embedder, rag and index settings) are unchanged.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import busy_note, machine_rows, say, table
from models.config import load_config
from models.errors import InputError, RagtuneError
from models.storage import write_section
from ragtune.compare.evidence import DEPTH
from ragtune.compare.longdocs import (
    accuracy_table,
    contextual_variants,
    corpus_text,
    milliseconds,
    paired_rows,
    score_variant,
    select_corpus,
)
from ragtune.compare.retrieval import run_settings
from ragtune.compare.settings import CONTEXTUAL_KEY, retrieval_settings
from ragtune.compose import quiet_libraries

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT.parent / "shared" / "datasets" / "squad-long"
WORK = Path.home() / ".cache" / "ragtune-bench" / "retrieval"
PACKAGES = ("torch", "transformers", "sentence-transformers", "hnswlib", "numpy", "ragtune")


SUBSET_NOTE = "\n\nA subset run (--docs, --limit or --retrievers): the corpus below says what was measured."


@dataclass(frozen=True)
class Options:
    dataset: Path  # squad-long: docs/ and questions.jsonl
    work: Path  # indexes and corpus copies, kept between runs
    docs: int | None = None  # articles to ingest (None: all)
    limit: int | None = None  # questions to ask (None: all whose gold articles are in)
    seed: int = 0
    retrievers: tuple[str, ...] = ()  # () : every registered retriever
    scale: int = 100_000  # chunks in the latency-at-scale index (0: skip the section)
    scale_queries: int = 200
    noise: float = 0.62  # norm of a copy's vector noise (cosine ~0.85 to its source)
    drop: float = 0.3  # share of a copy's words dropped
    throughput_docs: int = 40  # articles ingested fresh for the throughput comparison (0: skip)
    throughput_rounds: int = 2  # ingest / raw encode alternations; each side's fastest is kept
    overrides: tuple[str, ...] = ()
    command: str = ""


def _retrievers(options: Options) -> list[str]:
    from rag.retrieve import RETRIEVERS

    unknown = [r for r in options.retrievers if r not in RETRIEVERS]
    if unknown:
        raise InputError(f"--retrievers: {', '.join(unknown)} not registered; choose from {', '.join(RETRIEVERS)}")
    return list(options.retrievers) or list(RETRIEVERS)


def accuracy(options: Options, corpus: Any, embedder: Any) -> tuple[str, dict[str, Any], list[str]]:
    """Sections 1 and 2, the index records, and the overrides of the variant the later sections use."""
    base = load_config(None, list(options.overrides))
    settings = retrieval_settings(_retrievers(options), base)
    variants, records, parts = {}, {}, []
    extra: list[str] = []
    for label, extra in contextual_variants():
        overrides = [*options.overrides, *extra]
        records[label], variants[label] = score_variant(corpus, overrides, settings, embedder, options.work)
        parts.append(f"#### {label}\n\n" + accuracy_table(variants[label]))
    text = (
        "### 1. Accuracy per retrieval setting\n\nHits in percent, MRR as a fraction, each with its 95% bootstrap "
        "interval over questions; latency is "
        f"one `retrieve` call (embed, search, fusion, rerank) with rag.top_k={DEPTH}, after one warm-up.\n\n"
        + "\n\n".join(parts)
        + "\n\n### 2. Paired differences on evidence hit@5\n\nSame questions, per-question differences "
        "bootstrapped (seed 0); an interval that excludes 0 is a real difference.\n\n"
        + table("difference | evidence hit@5, points (95% CI)", paired_rows(variants))
    )
    return text, records, [*options.overrides, *extra]


def latency_at_scale(options: Options, corpus: Any, record: dict[str, Any], overrides: list[str], embedder: Any) -> str:
    from ragtune.compare.scale import grown_index

    source = load_config(None, [*overrides, f"index.name={record['name']}"])
    name, grown = grown_index(
        source,
        overrides,
        embedder.dim,
        options.scale,
        noise=options.noise,
        drop=options.drop,
        seed=options.seed,
        work=options.work,
    )
    # First stages only: reranking's cost grows with its candidates, not with the index.
    settings = [s for s in retrieval_settings(_retrievers(options), source, rerank=False) if not s.skip]
    questions = corpus.questions[: options.scale_queries]

    def make_config(extra: list[str]) -> Any:
        return load_config(None, [*overrides, f"index.name={name}", *extra, f"rag.top_k={DEPTH}"])

    runs, _ = run_settings(settings, make_config, questions, corpus.docs, embedder, progress=False)
    rows = []
    for run in runs:
        if run.skipped:
            rows.append([run.setting.label, f"skipped: {run.skipped}", ""])
        else:
            rows.append([run.setting.label, milliseconds(run.latencies, 50), milliseconds(run.latencies, 95)])
            say(f"[scale] {run.setting.label}: p50 {rows[-1][1]} ms, p95 {rows[-1][2]} ms")
    how = "reused from an earlier run" if grown["reused"] else f"built in {grown['build_s']} s"
    return (
        f"### 3. Query latency at {grown['chunks']:,} chunks\n\nThe {grown['real']:,} chunks of section 1's index "
        f"(texts and vectors read back) plus {grown['copies']:,} perturbed copies: a random real chunk with "
        f"{options.drop:.0%} of its words dropped and Gaussian noise of norm {options.noise} added to its vector, "
        f"re-normalised (mean cosine to its source {grown['cosine']}; numpy seed {options.seed}); {how}. "
        f"{len(questions)} questions, one `retrieve` call each with rag.top_k={DEPTH}, no reranking.\n\n"
        + table("setting | p50 ms | p95 ms", rows)
    )


def throughput_text(options: Options, corpus: Any, embedder: Any) -> str:
    from ragtune.compare.scale import throughput

    plain = [f"{CONTEXTUAL_KEY}=false"]  # both sides embed the same texts
    files = sorted(corpus.docs.glob("*.txt"))[: options.throughput_docs]
    found = throughput(files, [*options.overrides, *plain], embedder, options.work, options.throughput_rounds)
    ok = "pass" if found["ratio"] >= 0.9 else "FAIL"
    seconds = ", ".join(f"{a:.1f} / {b:.1f}" for a, b in zip(found["ingest_s"], found["raw_s"]))
    rows = [
        ["documents / chunks", f"{found['documents']} / {found['chunks']}", "", ""],
        ["seconds per round, ingest / raw encode", seconds, "", ""],
        ["ingest (walk, read, chunk, embed, index, commit)", f"{found['ingest_rate']:.1f} chunks/s", "", ""],
        [f"raw `SentenceTransformer.encode`, batch {found['batch_size']}", f"{found['raw_rate']:.1f} chunks/s", "", ""],
        ["ingest ÷ raw encode", f"{found['ratio']:.2f}x", ">= 0.9x", ok],
    ]
    context = " with contextual chunks off, so both sides embed the same texts" if plain else ""
    return (
        f"### 4. Ingest throughput\n\nThe first {found['documents']} articles (name order) ingested into a fresh "
        f"index{context}; raw encode gets the chunk texts read back from that index's store. Both warm; "
        f"{found['rounds']} alternating rounds, each side's fastest kept.\n\n"
        + table("metric | value | target | result", rows)
    )


def run(options: Options) -> str:
    """Every section, measured now (indexes reused from options.work); the Markdown for BENCHMARKS.md."""
    from models.embedders import build_embedder

    os.environ["RAGTUNE_HOME"] = str(options.work / "home")
    say(f"$ {options.command}")
    machine = machine_rows(PACKAGES)
    note = busy_note()
    corpus = select_corpus(options.dataset, options.work, options.docs, options.limit, options.seed)
    say(f"[corpus] {corpus.articles} articles, {len(corpus.questions)} questions")
    embedder = build_embedder(load_config(None, list(options.overrides)).embedder)
    accuracy_md, records, overrides = accuracy(options, corpus, embedder)
    sections = [accuracy_md]
    if options.scale:
        sections.append(latency_at_scale(options, corpus, list(records.values())[-1], overrides, embedder))
    if options.throughput_docs:
        sections.append(throughput_text(options, corpus, embedder))
    subset = options.docs is not None or options.limit is not None or options.retrievers
    header = [
        "## Retrieval on long documents (`scripts/bench_retrieval.py`)",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with:\n\n```\n{options.command}\n```"
        + (SUBSET_NOTE if subset else ""),
        "### Machine\n\n" + table("item | value", machine) + (f"\n\n**Note:** {note}" if note else ""),
        "### Corpus\n\n" + corpus_text(corpus, options.dataset, records),
    ]
    return "\n\n".join(header + sections)


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
