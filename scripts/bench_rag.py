#!/usr/bin/env python
"""Benchmark ragtune's RAG path on this machine and write the figures to BENCHMARKS.md.

1. Ingest throughput on PubMedQA contexts, against raw SentenceTransformer.encode of the same chunks.
2. Vector search: hnswlib (rag.index, index.backend=hnswlib) against exact numpy search over chunk vectors: the
   real chunk embeddings of section 1's index, topped up to --vectors with perturbed copies of them,
   queried with embedded PubMedQA questions (--random-too adds uniform random vectors, a worst case).
3. Retrieval latency (embed + search) for PubMedQA questions on the ingested index.
4. Answer latency and answer check of the default LM on examples/questions.jsonl, in the default dtype
   (auto: bfloat16 where the CPU computes it natively) and in the other of bfloat16 / float32.
5. Generation engines side by side (ragtune/bench_generation.py): transformers bf16 and fp32, the llamacpp
   engine (prompt_lookup off and on) and bare llama_cpp.Llama as its ceiling, each in its own process, on
   the prompts `ask` builds for the example questions and one ~1,000-token prompt; same model, same threads.
6. llama.cpp settings (ragtune/bench_weights.py): the packaged GGUF against re-quantised copies (Q8_0, Q4_0,
   IQ4_NL, BF16), flash attention off/on and micro-batch sizes, with transformers bf16 as the reference,
   taking turns in one process on the same prompts (prompt and decode tokens/s, perplexity, agreement with
   the packaged file), and the KV-cache reuse of the prompt's fixed start across questions.
7. OpenMP wait (ragtune/bench_openmp.py): threads that sleep at once, spin briefly (the default) or spin
   long, each in fresh processes: llamacpp alone, transformers bf16 alone, two llamacpp processes at once.

    python scripts/bench_rag.py                                # full size, writes BENCHMARKS.md
    python scripts/bench_rag.py --quick --out /tmp/bench.md    # small sizes, a smoke test
    python scripts/bench_rag.py --gen-only                     # section 5 alone (its own BENCHMARKS.md section)
    python scripts/bench_rag.py --weights --answers 3          # section 6 alone, one section per --model
    python scripts/bench_rag.py --openmp --answers 6 --gen-tokens 48   # section 7 alone (OpenMP wait)

Indexes go to a fresh temporary RAGTUNE_HOME (the user's indexes are never touched); models are read
from RAGTUNE_CACHE as usual. PubMedQA documents are the CONTEXTS paragraphs only, never LONG_ANSWER.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import models  # noqa: E402,F401  (sets how OpenMP threads wait before torch loads libgomp: models/__init__.py)

# isort: split
import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.config import Config, load_config  # noqa: E402
from models.device import resolve_device, resolve_dtype  # noqa: E402
from models.embedding import Embedder, build_embedder  # noqa: E402
from models.errors import RagtuneError  # noqa: E402
from models.generate import SamplingParams, collect, load_language_model  # noqa: E402
from models.paths import index_dir  # noqa: E402
from models.storage import write_section  # noqa: E402
from rag.index import create_index  # noqa: E402
from rag.ingest import ingest  # noqa: E402
from rag.retrieve import CurrentIndex, DenseRetriever  # noqa: E402
from ragtune.app import build_pipeline, quiet_libraries  # noqa: E402
from ragtune.bench_weights import WEIGHT_TYPES  # noqa: E402
from ragtune.benchmark import machine_rows, ms, pct, say, table  # noqa: E402

PUBMEDQA = ROOT.parent / "shared" / "datasets" / "pubmedqa" / "ori_pqal.json"  # ../shared beside the checkout
FULL = {"docs": 1000, "vectors": 100_000, "queries": 200, "questions": 200, "answers": None}
QUICK = {"docs": 50, "vectors": 10_000, "queries": 50, "questions": 20, "answers": 2}
K = 10  # neighbours compared for recall


def verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def blas_threads() -> str:
    """numpy's BLAS and its thread count (torch brings its own BLAS, which exact search does not use)."""
    try:  # threadpoolctl ships with scikit-learn; the benchmark runs without it
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    mine = [i for i in blas if "numpy" in i.get("filepath", "")] or blas
    return ", ".join(f"{i['internal_api']} {i['num_threads']}" for i in mine) or "unknown"


def one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """numpy's BLAS limited to one thread, where threadpoolctl is installed.

    hnswlib answers a query on one thread, so the exact baseline gets one too. On a busy 2-core machine
    a 2-thread OpenBLAS matrix-vector product can also stall on the scheduler (seen here: a flat ~8 ms
    per query for 10k vectors against ~0.6 ms on one thread), which would inflate the speed-up.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


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


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def chunk_corpus(
    args: argparse.Namespace, retriever: DenseRetriever, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """`args.vectors` unit vectors: section 1's real chunk embeddings, then perturbed copies of them.

    Returns the vectors (in a random insertion order), a mask of which are copies, and facts for the report.
    """
    snapshot = retriever.index.snapshot()
    # The exact vectors ingest embedded, read back from its hnswlib index (cosine space stores them
    # unit-length; re-normalising only removes float rounding so that exact search's dot is the cosine).
    real = unit(snapshot.index.vectors(snapshot.store.live_ids()))
    n, dim = args.vectors, real.shape[1]
    if n <= len(real):
        return real[:n], np.zeros(n, dtype=bool), {"real": n, "copies": 0, "cosine": float("nan")}
    # Chunk embeddings are far from uniform in 384-d (they cluster by topic), but 1000 abstracts
    # give only a few thousand chunks: reach n with copies that stay near a real chunk. Noise of norm r
    # gives a cosine of about 1 / sqrt(1 + r^2) to the source (0.62 -> ~0.85).
    sources = rng.integers(0, len(real), size=n - len(real))
    noise = rng.standard_normal((len(sources), dim), dtype=np.float32) * np.float32(args.noise / np.sqrt(dim))
    copies = unit(real[sources] + noise)
    cosine = float(np.einsum("ij,ij->i", copies, real[sources]).mean())
    data = np.concatenate([real, copies])
    is_copy = np.arange(n) >= len(real)
    order = rng.permutation(n)  # insert mixed, so the graph is not built from the real vectors first
    return data[order], is_copy[order], {"real": len(real), "copies": len(copies), "cosine": cosine}


def measure_search(
    name: str, data: np.ndarray, queries: np.ndarray, config: Config, ef_extra: list[int]
) -> tuple[list[tuple[str, ...]], dict[str, Any]]:
    """Build an hnswlib index over `data` and compare it with exact search, one query at a time.

    Returns table rows (one per ef_search) and facts for the text: build time, the exact top-K of each
    query, and exact search's p50 / p95 with numpy's default BLAS threads.
    """
    cfg = config.index
    n, dim = data.shape
    started = time.perf_counter()
    index = create_index(cfg, dim, capacity=n)
    index.add(data, np.arange(n))
    build_s = time.perf_counter() - started
    say(f"[search:{name}] built hnswlib index of {n:,} x {dim} in {build_s:.1f}s")

    def exact(query: np.ndarray) -> np.ndarray:
        scores = data @ query  # unit vectors: inner product == cosine, the index's space
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])]

    def time_exact() -> tuple[list[np.ndarray], list[float]]:
        for query in queries[:10]:  # warm-up
            exact(query)
        found, times = [], []
        for query in queries:
            started = time.perf_counter()
            found.append(exact(query))
            times.append(time.perf_counter() - started)
        return found, times

    with one_blas_thread():
        truth, exact_times = time_exact()
    _, all_threads = time_exact()  # reported beside, not used for the speed-up
    exact_p50, exact_p95 = pct(exact_times, 50), pct(exact_times, 95)
    facts = {"build_s": build_s, "truth": truth, "all_p50": pct(all_threads, 50), "all_p95": pct(all_threads, 95)}
    say(f"[search:{name}] exact numpy search, 1 BLAS thread: p50 {ms(exact_p50)}, p95 {ms(exact_p95)} per query")
    say(f"[search:{name}] exact, default BLAS threads: p50 {ms(facts['all_p50'])}, p95 {ms(facts['all_p95'])}")
    for query in queries[:10]:  # warm-up
        index.search(query, K)

    rows = []
    expected = [set(t.tolist()) for t in truth]
    for ef in dict.fromkeys([cfg.ef_search, *ef_extra]):  # the config's first, no repeats
        index.ef_search = ef
        times, hits = [], 0
        for query, want in zip(queries, expected):
            started = time.perf_counter()
            labels, _ = index.search(query, K)
            times.append(time.perf_counter() - started)
            hits += len(want & set(labels.tolist()))
        recall, p50 = hits / (K * len(queries)), pct(times, 50)
        speedup = exact_p50 / p50
        say(f"[search:{name}] ef_search={ef}: recall@{K} {recall:.4f}, p50 {ms(p50)}, speed-up {speedup:.1f}x")
        label = f"{ef} (config)" if ef == cfg.ef_search else str(ef)
        figures = (f"{recall:.4f}", ms(p50), ms(pct(times, 95)), ms(exact_p50), ms(exact_p95), f"{speedup:.1f}x")
        rows.append((name, label, *figures, verdict(recall >= 0.98), verdict(speedup >= 50)))
    del index
    return rows, facts


def bench_search(args: argparse.Namespace, records: dict[str, Any], retriever: DenseRetriever) -> str:
    rng = np.random.default_rng(args.seed)
    config = retriever.config
    data, is_copy, corpus = chunk_corpus(args, retriever, rng)
    n, dim = data.shape
    say(
        f"[search] {n:,} vectors: {corpus['real']:,} real chunk embeddings + {corpus['copies']:,} perturbed copies "
        f"(noise norm {args.noise}, mean cosine to source {corpus['cosine']:.3f})"
    )
    # Real questions, not perturbed corpus vectors: their neighbours are at realistic distances.
    questions = [records[pmid]["QUESTION"] for pmid in list(records)[: args.queries]]
    queries = retriever.embedder.encode(questions)
    rows, facts = measure_search("chunks", data, queries, config, args.ef_extra)
    copy_share = float(np.mean([is_copy[t].mean() for t in facts["truth"]]))
    say(f"[search] share of perturbed copies in the exact top {K}: {copy_share:.1%}")
    text = (
        f"### 2. Vector search\n\n{n:,} chunk vectors of dim {dim}: the {corpus['real']:,} real chunk embeddings of "
        f"section 1's index ({args.docs} PubMedQA records' CONTEXTS, read back from the index) plus "
        f"{corpus['copies']:,} perturbed copies, each a randomly chosen real chunk vector plus Gaussian noise of "
        f"norm {args.noise}, re-normalised (numpy seed {args.seed}); a copy's mean cosine to its source is "
        f"{corpus['cosine']:.3f}. All inserted in one random order. Queries: the embedded QUESTION fields of "
        f"{len(queries)} PubMedQA records; {copy_share:.1%} of their exact top-{K} neighbours are perturbed "
        f"copies. hnswlib (`rag.index.hnswlib`): space={config.index.space}, M={config.index.m}, "
        f"ef_construction={config.index.ef_construction}, built in {facts['build_s']:.1f}s (hnswlib's default "
        f"threads). Exact: one numpy matrix-vector product + argpartition per query over the same vectors. Both "
        f"searched one query at a time on one thread (numpy's BLAS limited to 1 thread for the exact side); truth "
        f"is the exact top {K}; speed-up is exact p50 ÷ hnswlib p50. With numpy's default BLAS threads "
        f"({blas_threads()}) exact search took p50 {ms(facts['all_p50'])}, p95 {ms(facts['all_p95'])}."
    )
    if args.random_too:
        # The worst case kept for comparison: no cluster structure at all, and each query is an indexed
        # vector plus the same noise, so it has a true nearest neighbour.
        data = unit(rng.standard_normal((n, dim), dtype=np.float32))
        noise = rng.standard_normal((len(queries), dim), dtype=np.float32) * np.float32(args.noise / np.sqrt(dim))
        random_queries = unit(data[rng.choice(n, size=len(queries), replace=False)] + noise)
        random_rows, random = measure_search("random", data, random_queries, config, args.ef_extra)
        rows += random_rows
        text += (
            f"\n\nRows `random` (--random-too): {n:,} uniform random unit vectors, a worst case for graph "
            f"search (no cluster structure); {len(queries)} queries, each an indexed vector plus Gaussian noise "
            f"of norm {args.noise}, re-normalised; built in {random['build_s']:.1f}s; exact with default BLAS "
            f"threads p50 {ms(random['all_p50'])}."
        )
    header = (
        f"corpus | ef_search | recall@{K} | hnswlib p50 | hnswlib p95 | exact p50 | exact p95 | speed-up "
        "| recall >= 0.98 | speed-up >= 50x"
    )
    return text + "\n\n" + table(header, rows)


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


def answer_run(config: Config, embedder: Embedder, questions: list[dict[str, Any]]) -> dict[str, Any]:
    """Load the LM once for `config`, answer every question; per-answer figures and the LM's dtype."""
    started = time.perf_counter()
    lm = load_language_model(config.llm, progress=False)
    pipeline = build_pipeline(config, embedder=embedder, generator=lm.generator(), progress=False)
    load_s = time.perf_counter() - started
    tag = f"{config.llm.dtype}->{lm.dtype}"
    say(f"[answers:{tag}] loaded {config.llm.model} in {load_s:.1f}s")
    warm = [{"role": "user", "content": "Say hello."}]
    collect(pipeline.generator.stream(warm, SamplingParams(max_new_tokens=4)))  # warm-up, not measured
    run: dict[str, Any] = {"load_s": load_s, "device": lm.device, "dtype": lm.dtype, "correct": 0}
    for key in ("first", "lm_first", "total", "decode", "tokens"):
        run[key] = []
    for item in questions:
        answer = pipeline.answer(item["question"])
        ok = any(a.lower() in answer.text.lower() for a in item["answers"])
        run["correct"] += ok
        run["total"].append(answer.timings["total_s"])
        if "first_token_s" in answer.timings:
            run["first"].append(answer.timings["first_token_s"])
        usage = answer.usage  # None when nothing was retrieved and the LM was not asked
        if usage is not None:
            run["tokens"].append(usage.completion_tokens)
            if usage.first_token_s is not None:
                run["lm_first"].append(usage.first_token_s)
                # Our own decode figure from raw usage fields, independent of Usage.tokens_per_s's definition.
                if usage.completion_tokens > 1 and usage.total_s > usage.first_token_s:
                    run["decode"].append((usage.completion_tokens - 1) / (usage.total_s - usage.first_token_s))
        tokens = usage.completion_tokens if usage else 0
        say(
            f"[answers:{tag}] {item['id']}: first token {answer.timings.get('first_token_s', float('nan')):.2f}s, "
            f"total {answer.timings['total_s']:.2f}s, {tokens} tokens, {'ok' if ok else 'miss'}: {answer.text[:80]!r}"
        )
    del pipeline, lm  # free this LM before the next one is loaded
    gc.collect()
    return run


def bench_answers(args: argparse.Namespace, embedder: Embedder, overrides: list[str]) -> str:
    # The dtype comparison is transformers' (llamacpp runs the GGUF's own types; section 5 compares engines).
    config = load_config(None, ["index.name=examples", "llm.backend=transformers", *overrides])
    summary = ingest([ROOT / "examples" / "docs"], config, embedder, progress=False)
    say(f"[answers] indexed examples/docs: {summary.line()}")
    lines = (ROOT / "examples" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line) for line in lines if line.strip()][: args.answers]
    # The configured dtype (default auto) against the other of bfloat16 / float32, so the default is
    # backed by a measurement on this machine; the comparison's override comes last, so it wins.
    chosen = resolve_dtype(config.llm.dtype, resolve_device(config.llm.device, "llm.device"))
    other = "bfloat16" if chosen == torch.float32 else "float32"
    configs = [
        config,
        load_config(None, ["index.name=examples", "llm.backend=transformers", *overrides, f"llm.dtype={other}"]),
    ]
    runs = [answer_run(c, embedder, questions) for c in configs]

    def median(key: str, unit: str = "", digits: int = 2) -> tuple[str, ...]:
        return tuple(f"{pct(run[key], 50):.{digits}f}{unit}" for run in runs)

    rows = [
        ("first token p50 (from the question: embed + search + prompt + prefill)", *median("first", " s")),
        ("LM first token p50 (from the `generate` call: prefill + first step)", *median("lm_first", " s")),
        ("total p50", *median("total", " s")),
        (
            "decode tokens/s, median over answers: (completion tokens − 1) ÷ (LM total − LM first token)",
            *median("decode", digits=1),
        ),
        ("completion tokens p50", *median("tokens", digits=0)),
        ("answers containing an accepted string", *(f"{run['correct']}/{len(questions)}" for run in runs)),
        ("LM load time", *(f"{run['load_s']:.1f} s" for run in runs)),
    ]
    for name, *values in rows:
        say(f"[answers] {name}: {' vs '.join(values)}")
    names = [str(run["dtype"]).removeprefix("torch.") for run in runs]
    columns = [f"llm.dtype={c.llm.dtype} → {name}" for c, name in zip(configs, names)]
    return (
        f"### 4. Answer latency\n\n{len(questions)} questions of `examples/questions.jsonl`, default config "
        f"(`{config.llm.model}` on {runs[0]['device']}, greedy, max_new_tokens={config.llm.max_new_tokens}), "
        f"index built from `examples/docs`, once with the configured dtype ({config.llm.dtype}, resolved to "
        f"{names[0]} here) and once with llm.dtype={other}; each LM loaded once, then one short warm-up "
        "generation. Timings from `RagPipeline.answer` and the stream's `Usage` fields; first token counts "
        "from the question. Load times depend on order: the configured dtype loads first, and the second load "
        "may find the weights in the page cache. No target set.\n\n" + table("metric | " + " | ".join(columns), rows)
    )


def bench_generation(args: argparse.Namespace, embedder: Embedder) -> str:
    from ragtune.bench_generation import ENGINES, report, run_child

    config, path, count = generation_prompts(args, embedder)
    threads = config.llm.threads or len(os.sched_getaffinity(0))
    engines = args.gen_engines or list(ENGINES)
    from ragtune.bench_lora_memory import random_adapters

    # Three LoRAs (r=8 on all 7 projections): the first is the "+ LoRA" engines' adapter, all three are resident
    # in the memory measurement.
    adapters = random_adapters(config.llm.model, Path(os.environ["RAGTUNE_HOME"]) / "bench-loras")
    load = os.getloadavg()
    runs = [
        run_child(e, config.llm.model, threads, path, args.gen_tokens, timeout=1800, adapter=adapters[0])
        for e in engines
    ]
    runs.append(run_child("alternating", config.llm.model, threads, path, args.gen_tokens, timeout=1800))
    load = f"{load[0]:.2f} before, {os.getloadavg()[0]:.2f} after (1-minute load average)"
    default = resolve_dtype("auto", "cpu")
    reference = "transformers bf16" if default == torch.bfloat16 else "transformers fp32"
    text, ratios = report(runs, reference)
    ratios.append(lora_memory(config.llm.model, threads, adapters))
    for line in ratios:
        say(f"[gen] {line}")
    return (
        f"### 5. Generation engines side by side\n\n`{config.llm.model}`, {threads} threads for every engine, greedy, "
        f"at most {args.gen_tokens} new tokens; {count} RAG prompts built as `ask` builds them "
        f"(examples/docs, default retrieval) plus one {runs[0].get('prompts', [{}])[-1].get('prompt_tokens', '?')}"
        "-token prompt (the example documents). Each engine in its own process (its peak RSS is its own), one "
        "warm-up generation first. llamacpp keeps the previous prompt in its KV cache, so the RAG prompts "
        "(which share the system prompt) evaluate only what differs; the bare row does the same (llama_cpp's "
        f"own prefix reuse). Then llamacpp and bare take turns in one process on the same prompts, so their "
        f"decode ratio is measured under the same load. The + LoRA engines answer through one LoRA (r=8 on all 7 "
        "projections, random weights: its answers differ from the base's; PEFT on transformers, its GGUF export "
        f"on llamacpp). transformers' default dtype here: {reference}. "
        f"Load: {load}.\n\n" + text + "\n\n" + "\n".join(f"- {line}" for line in ratios)
    )


def lora_memory(model: str, threads: int, folders: list[Path]) -> str:
    """RSS of the llamacpp base alone and with the 3 GGUF LoRAs resident (a child process's own figures)."""
    import subprocess

    command = [sys.executable, "-m", "ragtune.bench_lora_memory", model, str(threads), *map(str, folders)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if done.returncode != 0:
        return f"llamacpp RSS with 3 GGUF LoRAs: the measurement failed (exit status {done.returncode}, printed above)"
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    base, last = figures["base"], figures["adapters"][-1]
    steps = " → ".join(f"{mb:.0f}" for mb in [base, *figures["adapters"]])
    return (
        f"llamacpp RSS, base alone → with 1, 2, 3 GGUF LoRAs resident (r=8 on all 7 projections, "
        f"{figures['adapter_mb'][0]} MB each): {steps} MB = {last / base:.2f}× (target ≤ 1.3×)"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="report path (default: BENCHMARKS.md at repo root)")
    add("--quick", action="store_true", help="small sizes for a smoke test: " + json.dumps(QUICK))
    add("--pubmedqa", type=Path, default=PUBMEDQA, help=f"PubMedQA ori_pqal.json (default {PUBMEDQA})")
    add("--docs", type=int, help=f"PubMedQA records to ingest (default {FULL['docs']})")
    add("--vectors", type=int, help=f"chunk vectors to search, real + perturbed copies (default {FULL['vectors']:,})")
    add("--queries", type=int, help=f"PubMedQA questions as vector-search queries (default {FULL['queries']})")
    add("--questions", type=int, help=f"PubMedQA questions for retrieval latency (default {FULL['questions']})")
    add("--answers", type=int, help="example questions answered by the LM (default all)")
    add("--ef-extra", type=int, nargs="*", default=[128, 256, 512, 1024], help="ef_search values besides the config's")
    add(
        "--noise",
        type=float,
        default=0.62,
        help="norm of the Gaussian noise in each perturbed copy (default 0.62: cosine ~0.85 to its source)",
    )
    add("--random-too", action="store_true", help="also search uniform random vectors (a worst case)")
    add("--seed", type=int, default=0, help="numpy seed for copies, insertion order and random vectors (default 0)")
    add("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override")
    add("--gen-only", action="store_true", help="run section 5 (generation engines) alone")
    add("--model", help="LM for section 5 (default llm.model)")
    add("--gen-tokens", type=int, default=128, help="most new tokens per answer in sections 5 and 7 (default 128)")
    add("--gen-engines", nargs="*", help="engines for section 5 (default all: see ragtune/bench_generation.py)")
    add("--weights", action="store_true", help="run section 6 (llama.cpp weight types and settings) alone")
    add(
        "--weight-types",
        nargs="*",
        default=["Q8_0", "Q4_0", "IQ4_NL", "BF16"],
        choices=WEIGHT_TYPES,
        metavar="TYPE",
        help=f"types to re-quantise to (section 6): {', '.join(WEIGHT_TYPES)}",
    )
    add("--weight-rounds", type=int, default=3, help="turns each setting takes on the prompts (section 6)")
    add("--openmp", action="store_true", help="run section 7 (how OpenMP threads wait) alone")
    add("--openmp-rounds", type=int, default=2, help="turns each OpenMP wait setting takes (section 7)")
    args = parser.parse_args()
    if args.weight_rounds < 1:
        parser.error(f"--weight-rounds must be at least 1, not {args.weight_rounds}")
    if args.openmp_rounds < 1:
        parser.error(f"--openmp-rounds must be at least 1, not {args.openmp_rounds}")
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def generation_prompts(args: argparse.Namespace, embedder: Embedder) -> tuple[Config, Path, int]:
    """The prompts `ask` builds for the example questions plus a ~1,000-token one, in a JSON file."""
    from ragtune.bench_generation import build_prompts

    model = ["llm.model=" + args.model] if args.model else []
    config = load_config(None, ["index.name=examples-gen", *args.overrides, *model])
    ingest([ROOT / "examples" / "docs"], config, embedder, progress=False)
    lines = (ROOT / "examples" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line) for line in lines if line.strip()][: args.answers]
    path = Path(os.environ["RAGTUNE_HOME"]) / "gen-prompts.json"
    path.write_text(
        json.dumps(build_prompts(config, embedder, questions, ROOT / "examples" / "docs")), encoding="utf-8"
    )
    return config, path, len(questions)


@contextlib.contextmanager
def bench_home() -> Iterator[Path]:
    """A fresh temporary RAGTUNE_HOME for the indexes a benchmark builds (the user's are never touched)."""
    with tempfile.TemporaryDirectory(prefix="ragtune-bench-") as tmp:
        os.environ["RAGTUNE_HOME"] = str(Path(tmp) / "home")
        yield Path(tmp)


def write_report(args: argparse.Namespace, section: str, heading: str, header: list[str], parts: list[str]) -> int:
    """One section of the report: its heading, how it was measured (`header`), then its parts; atomic."""
    write_section(args.out, section, "\n\n".join([heading, *header, *parts]), title="# ragtune benchmarks")
    say(f"wrote {args.out}")
    return 0


def measured(command: str, rows: list[tuple[str, str]], note: str = "") -> list[str]:
    """When and with which command the figures were measured, and the machine."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return [f"Measured {when} with:\n\n```\n{command}\n```{note}", "### Machine\n\n" + table("item | value", rows)]


def model_section(name: str, model: str | None) -> str:
    """One report section per model: the default LM's keeps `name`, another model's gets its own."""
    return name + (f"_{model.replace('.', '_')}" if model else "")


def default_embedder(args: argparse.Namespace) -> Embedder:
    return build_embedder(load_config(None, args.overrides).embedder)


def weights_only(args: argparse.Namespace, command: str, rows: list[tuple[str, str]]) -> int:
    """Section 6 alone: llama.cpp weight types, attention and batch sizes, in one child process."""
    import subprocess

    from ragtune.bench_weights import render

    with bench_home():
        config, prompts, count = generation_prompts(args, default_embedder(args))
        threads = config.llm.threads or len(os.sched_getaffinity(0))
        load = os.getloadavg()[0]
        child = [sys.executable, "-m", "ragtune.bench_weights", config.llm.model, str(threads), str(prompts)]
        child += [str(args.weight_rounds), *args.weight_types]
        done = subprocess.run(child, stdout=subprocess.PIPE, text=True, cwd=ROOT, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = f"{load:.2f} before, {os.getloadavg()[0]:.2f} after (1-minute load average)"
    result["questions"] = count
    heading = f"## llama.cpp settings: {config.llm.model} (`scripts/bench_rag.py --weights`)"
    section = model_section("bench_weights", config.llm.model)
    return write_report(args, section, heading, measured(command, rows), [render(result)])


def openmp_only(args: argparse.Namespace, command: str, rows: list[tuple[str, str]]) -> int:
    """Section 7 alone: how OpenMP threads wait, each setting in fresh child processes."""
    from ragtune.bench_openmp import measure, render

    with bench_home():
        config, prompts, _ = generation_prompts(args, default_embedder(args))
        threads = config.llm.threads or len(os.sched_getaffinity(0))
        load = os.getloadavg()[0]
        result = measure(config.llm.model, threads, prompts, args.gen_tokens, args.openmp_rounds)
    result["load"] = f"{load:.2f} before, {os.getloadavg()[0]:.2f} after (1-minute load average)"
    heading = f"## OpenMP wait: {config.llm.model} (`scripts/bench_rag.py --openmp`)"
    section = model_section("bench_openmp", config.llm.model)
    return write_report(args, section, heading, measured(command, rows), [render(result)])


def gen_only(args: argparse.Namespace, command: str, rows: list[tuple[str, str]]) -> int:
    """Section 5 alone, written to its own section of the report."""
    with bench_home():
        generation_md = bench_generation(args, default_embedder(args))
    heading = f"## Generation engines{f': {args.model}' if args.model else ''} (`scripts/bench_rag.py --gen-only`)"
    section = model_section("bench_generation", args.model)
    return write_report(args, section, heading, measured(command, rows), [generation_md])


def main() -> int:
    args = parse_args()
    quiet_libraries()
    command = shlex.join(sys.orig_argv)
    say(f"$ {command}")
    rows = machine_rows(
        ("torch", "transformers", "sentence-transformers", "hnswlib", "numpy", "llama-cpp-python"),
        extra=(("numpy BLAS threads (default)", blas_threads()),),
    )
    for name, value in rows:
        say(f"[machine] {name}: {value}")
    try:
        return run(args, command, rows)
    except RagtuneError as exc:  # a bad --model, --set or model file: one line naming it, as ragtune says it
        print(f"bench_rag.py: error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, command: str, rows: list[tuple[str, str]]) -> int:
    """The sections the flags ask for, written to args.out."""
    if args.gen_only:
        return gen_only(args, command, rows)
    if args.weights:
        return weights_only(args, command, rows)
    if args.openmp:
        return openmp_only(args, command, rows)
    records = json.loads(args.pubmedqa.read_text(encoding="utf-8"))
    with bench_home() as tmp:
        ingest_md, retriever = bench_ingest(args, records, tmp, args.overrides)
        search_md = bench_search(args, records, retriever)
        retrieval_md = bench_retrieval(args, records, retriever)
        answers_md = bench_answers(args, retriever.embedder, args.overrides)
        generation_md = bench_generation(args, retriever.embedder)
    quick = "\n\nQuick mode: small sizes, a smoke test, not representative figures." if args.quick else ""
    heading = "## Retrieval-augmented answering (`scripts/bench_rag.py`)"
    parts = [ingest_md, search_md, retrieval_md, answers_md, generation_md]
    return write_report(args, "bench_rag", heading, measured(command, rows, quick), parts)


if __name__ == "__main__":
    sys.exit(main())
