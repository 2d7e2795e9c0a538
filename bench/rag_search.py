"""Section 2 of the RAG benchmark: hnswlib against exact numpy search over real chunk vectors and perturbed copies."""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Any

import numpy as np

from bench.common import ms, pct, say, table, verdict
from models.config import Config
from rag.index import create_index
from rag.retrieve import DenseRetriever

K = 10  # neighbours compared for recall


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
