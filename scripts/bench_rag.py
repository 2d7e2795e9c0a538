#!/usr/bin/env python
"""Benchmark ragtune's RAG path on this machine and write the figures to BENCHMARKS.md.

1. Ingest throughput on PubMedQA contexts, against raw SentenceTransformer.encode of the same chunks.
2. Vector search: hnswlib (rag.index.VectorIndex) against exact numpy search on random unit vectors.
3. Retrieval latency (embed + search) for PubMedQA questions on the ingested index.
4. Answer latency and answer check of the default LM on examples/questions.jsonl.

    python scripts/bench_rag.py                                # full size, writes BENCHMARKS.md
    python scripts/bench_rag.py --quick --out /tmp/bench.md    # small sizes, a smoke test

Indexes go to a fresh temporary RAGTUNE_HOME (the user's indexes are never touched); models are read
from RAGTUNE_CACHE as usual. PubMedQA documents are the CONTEXTS paragraphs only, never LONG_ANSWER.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from models.config import Config, load_config  # noqa: E402
from models.embedding import Embedder, build_embedder  # noqa: E402
from models.generate import SamplingParams, collect  # noqa: E402
from models.paths import index_dir  # noqa: E402
from models.storage import atomic_write_text  # noqa: E402
from rag.index import VectorIndex  # noqa: E402
from rag.ingest import ingest  # noqa: E402
from rag.pipeline import Retriever  # noqa: E402
from ragtune.app import build_pipeline, quiet_libraries  # noqa: E402

PUBMEDQA = Path("/work/shared/datasets/pubmedqa/ori_pqal.json")
FULL = {"docs": 300, "vectors": 100_000, "queries": 200, "questions": 200, "answers": None}
QUICK = {"docs": 50, "vectors": 10_000, "queries": 50, "questions": 20, "answers": 2}
K = 10  # neighbours compared for recall


def say(text: str) -> None:
    print(text, flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def table(header: str, rows: list[tuple[str, ...]]) -> str:
    """A Markdown table; `header` names the columns as "a | b | c"."""
    lines = [f"| {header} |", "|" + "---|" * (header.count("|") + 1)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def machine() -> list[tuple[str, str]]:
    import torch

    def proc_field(path: str, key: str) -> str:
        try:
            lines = Path(path).read_text(encoding="ascii", errors="ignore").splitlines()
        except OSError:
            return "unknown"
        return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(key)), "unknown")

    mem = proc_field("/proc/meminfo", "MemTotal")
    ram = f"{int(mem.split()[0]) / 2**20:.1f} GiB" if mem != "unknown" else mem
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU only)"
    rows = [
        ("CPU", proc_field("/proc/cpuinfo", "model name")),
        ("logical cores", str(os.cpu_count())),
        ("cores usable by this process", str(len(os.sched_getaffinity(0)))),
        ("torch threads", str(torch.get_num_threads())),
        ("load average (1, 5, 15 min) at start", ", ".join(f"{x:.2f}" for x in os.getloadavg())),
        ("RAM", ram),
        ("GPU", gpu),
        ("OS", platform.platform()),
        ("Python", platform.python_version()),
    ]
    for package in ("torch", "transformers", "sentence-transformers", "hnswlib", "numpy"):
        try:
            rows.append((package, version(package)))
        except PackageNotFoundError:
            rows.append((package, "not installed"))
    return rows


def bench_ingest(
    args: argparse.Namespace, records: dict[str, Any], work: Path, overrides: list[str]
) -> tuple[str, Retriever]:
    config = load_config(None, ["index.name=pubmedqa", *overrides])
    docs = work / "pubmedqa"
    docs.mkdir()
    ids = list(records)[: args.docs]
    for pmid in ids:  # CONTEXTS only: LONG_ANSWER states the answer
        (docs / f"{pmid}.txt").write_text("\n\n".join(records[pmid]["CONTEXTS"]) + "\n", encoding="utf-8")
    embedder = build_embedder(config.embedder)
    embedder.encode([p for pmid in ids[:32] for p in records[pmid]["CONTEXTS"]])  # warm-up
    summary = ingest([docs], config, embedder, progress=False)
    ingest_rate = summary.chunks / summary.seconds
    say(f"[ingest] {len(ids)} docs -> {summary.chunks} chunks in {summary.seconds:.2f}s = {ingest_rate:.1f} chunks/s")
    if summary.skipped:
        say(f"[ingest] skipped: {summary.skipped}")

    retriever = Retriever(index_dir(config), config, embedder)
    store = retriever.snapshot().store
    labels = store.live_ids()
    found: dict[int, Any] = {}
    for start in range(0, len(labels), 500):  # stay under SQLite's limit on bound parameters
        found.update(store.chunks(labels[start : start + 500]))
    texts = [found[label].text for label in labels]  # the exact chunks ingest embedded, in its order
    assert len(texts) == summary.chunks, (len(texts), summary.chunks)
    started = time.perf_counter()
    embedder.model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    raw_seconds = time.perf_counter() - started
    raw_rate = len(texts) / raw_seconds
    ratio = ingest_rate / raw_rate
    say(f"[ingest] raw encode of the same {len(texts)} chunks: {raw_seconds:.2f}s = {raw_rate:.1f} chunks/s")
    say(f"[ingest] ratio ingest / raw encode = {ratio:.2f}x")
    rows = [
        ("documents / chunks", f"{len(ids)} / {summary.chunks}", "—", "—"),
        ("ingest (walk, read, chunk, embed, index, commit)", f"{ingest_rate:.1f} chunks/s", "—", "—"),
        ("raw `SentenceTransformer.encode`, batch 64", f"{raw_rate:.1f} chunks/s", "—", "—"),
        ("ingest ÷ raw encode", f"{ratio:.2f}x", ">= 0.9x", verdict(ratio >= 0.9)),
    ]
    text = (
        f"## 1. Ingest throughput\n\nFirst {len(ids)} PubMedQA records, one `.txt` per id holding its CONTEXTS "
        f"paragraphs; `{config.embedder.model}` on `{embedder.model.device}`, chunks of "
        f"{config.rag.chunk_tokens} tokens with {config.rag.chunk_overlap} overlap. Both sides measured warm; "
        "raw encode gets the chunk texts read back from the index's chunk store.\n\n"
        + table("metric | value | target | result", rows)
    )
    return text, retriever


def bench_search(args: argparse.Namespace, config: Config) -> str:
    rng = np.random.default_rng(args.seed)
    dim, n, cfg = 384, args.vectors, config.index
    data = rng.standard_normal((n, dim), dtype=np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    noise = rng.standard_normal((args.queries, dim), dtype=np.float32) * (args.noise / np.sqrt(dim))
    queries = data[rng.choice(n, size=args.queries, replace=False)] + noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    started = time.perf_counter()
    index = VectorIndex.create(cfg.space, dim, cfg.m, cfg.ef_construction, cfg.ef_search, capacity=n)
    index.add(data, np.arange(n))
    build_s = time.perf_counter() - started
    say(f"[search] built hnswlib index of {n} x {dim} in {build_s:.1f}s")

    def exact(query: np.ndarray) -> np.ndarray:
        scores = data @ query
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])]

    for query in queries[:10]:  # warm-up both sides
        exact(query)
        index.search(query, K)
    truth, exact_times = [], []
    for query in queries:
        started = time.perf_counter()
        truth.append(set(exact(query).tolist()))
        exact_times.append(time.perf_counter() - started)
    exact_p50 = pct(exact_times, 50)
    say(f"[search] exact numpy search: p50 {ms(exact_p50)} per query")

    rows = []
    for ef in dict.fromkeys([cfg.ef_search, *args.ef_extra]):  # the config's first, no repeats
        index.ef_search = ef
        times, hits = [], 0
        for query, expected in zip(queries, truth):
            started = time.perf_counter()
            labels, _ = index.search(query, K)
            times.append(time.perf_counter() - started)
            hits += len(expected & set(labels.tolist()))
        recall, p50 = hits / (K * len(queries)), pct(times, 50)
        speedup = exact_p50 / p50
        say(f"[search] ef_search={ef}: recall@{K} {recall:.4f}, p50 {ms(p50)}, speed-up {speedup:.1f}x")
        label = f"{ef} (config)" if ef == cfg.ef_search else str(ef)
        figures = (f"{recall:.4f}", ms(p50), ms(pct(times, 95)), ms(exact_p50), f"{speedup:.1f}x")
        rows.append((label, *figures, verdict(recall >= 0.98), verdict(speedup >= 50)))
    header = (
        f"ef_search | recall@{K} | hnswlib p50 | hnswlib p95 | exact p50 | speed-up | recall >= 0.98 | speed-up >= 50x"
    )
    return (
        f"## 2. Vector search\n\n{n:,} random unit vectors of dim {dim} (numpy seed {args.seed}); "
        f"{len(queries)} queries, each an indexed vector plus Gaussian noise of norm ~{args.noise}, "
        "re-normalised, so each has a true nearest neighbour. hnswlib: "
        f"space={cfg.space}, M={cfg.m}, ef_construction={cfg.ef_construction}, built in {build_s:.1f}s "
        "(hnswlib's default threads). Exact: one matrix-vector product + argpartition per query. "
        f"Both searched one query at a time; truth is the exact top {K}. Uniform random vectors in 384 "
        "dimensions are a worst case for graph search (no cluster structure); speed-up compares p50s.\n\n"
        + table(header, rows)
    )


def bench_retrieval(args: argparse.Namespace, records: dict[str, Any], retriever: Retriever) -> str:
    ids = list(records)[: args.questions]
    indexed = set(list(records)[: args.docs])
    retriever.search("warm-up question", {})
    embed, search, both, hits = [], [], [], 0
    for pmid in ids:
        timings: dict[str, float] = {}
        sources, _ = retriever.search(records[pmid]["QUESTION"], timings)
        embed.append(timings["embed_s"])
        search.append(timings["search_s"])
        both.append(timings["embed_s"] + timings["search_s"])
        hits += pmid in indexed and any(Path(s.path).stem == pmid for s in sources)
    answerable = len(indexed.intersection(ids))
    rows = [
        (name, ms(pct(values, 50)), ms(pct(values, 95)))
        for name, values in (("embed", embed), ("search (hnswlib + chunk store)", search), ("embed + search", both))
    ]
    for name, p50, p95 in rows:
        say(f"[retrieval] {name}: p50 {p50}, p95 {p95}")
    say(f"[retrieval] own document in top {retriever.config.rag.top_k}: {hits}/{answerable}")
    return (
        f"## 3. Retrieval latency\n\n{len(ids)} PubMedQA QUESTION fields through `Retriever.search` on the "
        f"index of section 1 (top_k={retriever.config.rag.top_k}, one question at a time). The question's "
        f"own abstract was retrieved (above min_score) for {hits} of the {answerable} questions whose "
        "abstract is indexed. No target set.\n\n" + table("step | p50 | p95", rows)
    )


def bench_answers(args: argparse.Namespace, embedder: Embedder, overrides: list[str]) -> str:
    config = load_config(None, ["index.name=examples", *overrides])
    summary = ingest([ROOT / "examples" / "docs"], config, embedder, progress=False)
    say(f"[answers] indexed examples/docs: {summary.line()}")
    started = time.perf_counter()
    pipeline = build_pipeline(config, embedder=embedder, progress=False)
    load_s = time.perf_counter() - started
    say(f"[answers] loaded {config.llm.model} in {load_s:.1f}s")
    lines = (ROOT / "examples" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line) for line in lines if line.strip()][: args.answers]
    warm = [{"role": "user", "content": "Say hello."}]
    collect(pipeline.generator.stream(warm, SamplingParams(max_new_tokens=4)))  # warm-up, not measured
    first, total, rates, decode, correct = [], [], [], [], 0
    for item in questions:
        answer = pipeline.answer(item["question"])
        ok = any(a.lower() in answer.text.lower() for a in item["answers"])
        correct += ok
        total.append(answer.timings["total_s"])
        if "first_token_s" in answer.timings:
            first.append(answer.timings["first_token_s"])
        usage = answer.usage
        if usage is not None and usage.completion_tokens > 1 and usage.first_token_s is not None:
            rates.append(usage.tokens_per_s)
            decode.append((usage.completion_tokens - 1) / (usage.total_s - usage.first_token_s))
        tokens = usage.completion_tokens if usage else 0
        say(
            f"[answers] {item['id']}: first token {answer.timings.get('first_token_s', float('nan')):.2f}s, "
            f"total {answer.timings['total_s']:.2f}s, {tokens} tokens, {'ok' if ok else 'miss'}: {answer.text[:80]!r}"
        )
    rows = [
        ("first token p50", f"{pct(first, 50):.2f} s"),
        ("total p50", f"{pct(total, 50):.2f} s"),
        ("tokens/s median (completion tokens ÷ generate time)", f"{pct(rates, 50):.1f}"),
        ("decode tokens/s median (after the first token)", f"{pct(decode, 50):.1f}"),
        ("answers containing an accepted string", f"{correct}/{len(questions)}"),
        ("LM load time", f"{load_s:.1f} s"),
    ]
    for name, value in rows[:5]:
        say(f"[answers] {name}: {value}")
    device = next(pipeline.generator.model.parameters())
    return (
        f"## 4. Answer latency\n\n{len(questions)} questions of `examples/questions.jsonl`, default config "
        f"(`{config.llm.model}` on {device.device}, {device.dtype}, greedy, max_new_tokens="
        f"{config.llm.max_new_tokens}), index built from `examples/docs`. Timings from `RagPipeline.answer`; "
        "first token counts from the question (embed + search + prompt). One short warm-up generation "
        "first. No target set.\n\n" + table("metric | value", rows)
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="report path (default: BENCHMARKS.md at repo root)")
    add("--quick", action="store_true", help="small sizes for a smoke test: " + json.dumps(QUICK))
    add("--pubmedqa", type=Path, default=PUBMEDQA, help=f"PubMedQA ori_pqal.json (default {PUBMEDQA})")
    add("--docs", type=int, help=f"PubMedQA records to ingest (default {FULL['docs']})")
    add("--vectors", type=int, help=f"random vectors to index (default {FULL['vectors']:,})")
    add("--queries", type=int, help=f"vector-search queries (default {FULL['queries']})")
    add("--questions", type=int, help=f"PubMedQA questions for retrieval latency (default {FULL['questions']})")
    add("--answers", type=int, help="example questions answered by the LM (default all)")
    add("--ef-extra", type=int, nargs="*", default=[128, 256, 512, 1024], help="ef_search values besides the config's")
    add("--noise", type=float, default=0.5, help="norm of the noise added to query vectors (default 0.5)")
    add("--seed", type=int, default=0, help="numpy seed for the random vectors (default 0)")
    add("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main() -> int:
    args = parse_args()
    quiet_libraries()
    command = shlex.join(sys.orig_argv)
    say(f"$ {command}")
    records = json.loads(args.pubmedqa.read_text(encoding="utf-8"))
    rows = machine()
    for name, value in rows:
        say(f"[machine] {name}: {value}")
    with tempfile.TemporaryDirectory(prefix="ragtune-bench-") as tmp:
        os.environ["RAGTUNE_HOME"] = str(Path(tmp) / "home")
        ingest_md, retriever = bench_ingest(args, records, Path(tmp), args.overrides)
        search_md = bench_search(args, retriever.config)
        retrieval_md = bench_retrieval(args, records, retriever)
        answers_md = bench_answers(args, retriever.embedder, args.overrides)
    report = "\n\n".join(
        [
            "# ragtune benchmarks",
            f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with:\n\n```\n{command}\n```"
            + ("\n\nQuick mode: small sizes, a smoke test, not representative figures." if args.quick else ""),
            "## Machine\n\n" + table("item | value", rows),
            ingest_md,
            search_md,
            retrieval_md,
            answers_md,
        ]
    )
    atomic_write_text(args.out, report + "\n")
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
