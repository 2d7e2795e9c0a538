"""Sections 1 and 3 of the RAG benchmark: ingest throughput on PubMedQA contexts, and retrieval latency."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench.common import ms, pct, say, table, verdict
from models.config import load_config
from models.embedders import build_embedder
from models.paths import index_dir
from rag.ingest import ingest
from rag.retrieve import CurrentIndex, DenseRetriever


def bench_ingest(
    args: argparse.Namespace, records: dict[str, Any], work: Path, overrides: list[str]
) -> tuple[str, DenseRetriever]:
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

    retriever = DenseRetriever(CurrentIndex(index_dir(config), config, embedder.dim), config, embedder)
    store = retriever.index.snapshot().store
    labels = store.live_ids()
    found: dict[int, Any] = {}
    for start in range(0, len(labels), 500):  # stay under SQLite's limit on bound parameters
        found.update(store.chunks(labels[start : start + 500]))
    texts = [found[label].indexed_text for label in labels]  # what ingest embedded (with any context), in order
    assert len(texts) == summary.chunks, (len(texts), summary.chunks)
    if embedder.model is None:  # embedder.backend=openai: the reference is a local raw encode
        raise SystemExit("bench_rag measures ingest against a local raw encode; set embedder.backend=torch")
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
        f"### 1. Ingest throughput\n\n{len(ids)} of the {len(records)} PubMedQA records (file order), one `.txt` "
        "per id holding its CONTEXTS "
        f"paragraphs; `{config.embedder.model}` on `{embedder.model.device}`, chunks of "
        f"{config.rag.chunk_tokens} tokens with {config.rag.chunk_overlap} overlap. Both sides measured warm; "
        "raw encode gets the texts ingest embedded (each chunk with its title and headings when rag.contextual), "
        "read back from the chunk store.\n\n" + table("metric | value | target | result", rows)
    )
    return text, retriever


def bench_retrieval(args: argparse.Namespace, records: dict[str, Any], retriever: DenseRetriever) -> str:
    ids = list(records)[: args.questions]
    indexed = set(list(records)[: args.docs])
    retriever.retrieve("warm-up question")
    embed, search, both, hits = [], [], [], 0
    for pmid in ids:
        retrieval = retriever.retrieve(records[pmid]["QUESTION"])
        sources, timings = retrieval.sources, retrieval.timings
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
        f"### 3. Retrieval latency\n\n{len(ids)} PubMedQA QUESTION fields through `DenseRetriever.retrieve` on the "
        f"index of section 1 (top_k={retriever.config.rag.top_k}, one question at a time). The question's "
        f"own abstract was retrieved (above min_score) for {hits} of the {answerable} questions whose "
        "abstract is indexed. No target set.\n\n" + table("step | p50 | p95", rows)
    )
