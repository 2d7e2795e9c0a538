"""Retrieval behind one interface: a question in, numbered sources with their per-stage scores out.

`RagPipeline` and the app see only `Retriever.retrieve(question) -> Retrieval`; each way of finding
chunks is one class registered in RETRIEVERS and chosen by `rag.retriever`. Every retriever runs the
same stages: rank candidates (dense, lexical, or both fused), rerank them with a cross-encoder when
`rag.rerank.model` names one, keep the best `rag.top_k`, then drop those whose dense similarity to the
question is below `rag.min_score` (computed from the stored vectors when the dense side did not find
them), so one threshold means the same thing whichever retriever ranked the chunks.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from models.answer import Source
from models.config import Config
from models.embedding import Embedder
from models.errors import ConfigError, IndexCorruptError, IndexMissingError
from rag import fusion
from rag.collection import (
    Snapshot,
    current_generation,
    expectation,
    missing_index,
    open_served,
    open_snapshot,
    served_generation,
)
from rag.lexical import match_expression
from rag.rerank import Reranker, load_reranker
from rag.store import ChunkStore, StoredChunk

Scores = dict[int, dict[str, float]]  # chunk id -> {stage: score}


@dataclass
class Retrieval:
    sources: list[Source]
    generation: str  # the index generation searched
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage: embed_s, search_s, rerank_s
    vector: np.ndarray | None = None  # the question's unit vector, as the embedder made it


class Retriever(Protocol):
    embedder: Embedder  # what made the index's vectors and embeds the question

    def check(self) -> None:
        """Fail now (missing or damaged index, wrong embedder) rather than at the first question."""
        ...

    def retrieve(self, question: str) -> Retrieval: ...


class CurrentIndex:
    """Whatever generation CURRENT names, reopened when an ingest has published a newer one.

    Where this node has no index folder and index.backend keeps chunks in an engine (milvus), the generation
    the engine's alias names instead: the node needs only index.uri and index.name (stateless serving).
    """

    def __init__(self, root: Path, config: Config, dim: int) -> None:
        self.root, self.config, self.dim = root, config, dim
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()

    def snapshot(self) -> Snapshot:
        with self._lock:
            generation = current_generation(self.root)
            if generation is None:
                return self._served()
            if self._snapshot is None or self._snapshot.generation != generation:
                expect = expectation(self.config, self.dim)
                try:
                    fresh = open_snapshot(self.root, expect)
                except IndexCorruptError:
                    if current_generation(self.root) == generation:
                        raise
                    # Two ingests in quick succession pruned the generation we were opening: take the new one.
                    fresh = open_snapshot(self.root, expect)
                # The old snapshot is not closed here: a search in another thread may still be reading it;
                # its SQLite connection closes when the last reference goes.
                self._snapshot = fresh
            return self._snapshot

    def _served(self) -> Snapshot:
        """The engine's served generation; asked on every call, so an alias switch is seen at the next question."""
        config = self.config.index
        generation = served_generation(config)
        if generation is None:
            raise missing_index(self.root, config)
        if self._snapshot is None or self._snapshot.generation != generation:
            expect = expectation(self.config, self.dim)
            try:
                self._snapshot = open_served(config, generation, expect)
            except IndexMissingError:
                # Two ingests in quick succession dropped the generation we were opening: take the new one.
                self._snapshot = open_served(config, served_generation(config) or generation, expect)
        return self._snapshot


class RankingRetriever:
    """The stages every retriever shares; a subclass says how the first candidates are ranked (`rank`)."""

    stage = ""  # the key of the first stage's score in Source.scores
    lexical = False  # needs the lexical index

    def __init__(
        self, index: CurrentIndex, config: Config, embedder: Embedder, reranker: Reranker | None = None
    ) -> None:
        self.index, self.config, self.embedder, self.reranker = index, config, embedder, reranker

    def check(self) -> None:
        self._snapshot()

    def rank(self, snapshot: Snapshot, question: str, vector: np.ndarray, depth: int) -> tuple[list[int], Scores]:
        """Up to `depth` candidate ids (more for fusion), best first, and each one's stage scores."""
        raise NotImplementedError

    def retrieve(self, question: str) -> Retrieval:
        snapshot, rag = self._snapshot(), self.config.rag
        timings: dict[str, float] = {}
        started = time.perf_counter()
        vector = self.embedder.encode([question])[0]
        timings["embed_s"] = time.perf_counter() - started
        started = time.perf_counter()
        depth = max(rag.top_k, rag.rerank.candidates if self.reranker else 0)
        ranked, scores = self.rank(snapshot, question, vector, depth)
        chunks = snapshot.store.chunks(ranked[:depth])
        ranked = [i for i in ranked[:depth] if i in chunks]  # a label whose chunk is gone is never shown
        final = self.stage
        timings["search_s"] = time.perf_counter() - started
        if self.reranker is not None:
            started = time.perf_counter()
            ranked = self._rerank(question, ranked, chunks, scores)
            timings["rerank_s"], final = time.perf_counter() - started, "rerank"
        ranked = ranked[: rag.top_k]
        self._complete(snapshot, question, vector, ranked, scores)
        sources: list[Source] = []
        for chunk_id in ranked:
            chunk, own = chunks[chunk_id], scores[chunk_id]
            if own["dense"] >= rag.min_score:
                number = len(sources) + 1
                sources.append(Source(number, chunk.path, chunk.ordinal, chunk.locator, own[final], chunk.text, own))
        return Retrieval(sources, snapshot.generation, timings, vector)

    def _snapshot(self) -> Snapshot:
        snapshot = self.index.snapshot()
        if self.lexical and snapshot.store.lexical_index() is None:
            raise ConfigError(
                f"rag.retriever={self.config.rag.retriever} needs the lexical index, which lives in the index "
                f"folder ({self.index.root}) that this node lacks; a node serving from index.uri alone supports "
                "rag.retriever=dense (the node holding the index folder also serves lexical and hybrid)"
            )
        if self.lexical and "lexical" not in snapshot.manifest:
            raise IndexMissingError(
                f"index {self.index.root} has no lexical index, which rag.retriever={self.config.rag.retriever} "
                "needs (it was built by an earlier version); run `ragtune ingest DOCS` once to add it, "
                "or set rag.retriever=dense"
            )
        return snapshot

    def _rerank(self, question: str, ranked: list[int], chunks: dict[int, StoredChunk], scores: Scores) -> list[int]:
        assert self.reranker is not None
        rescored = self.reranker.score(question, [chunks[i].indexed_text for i in ranked])
        for chunk_id, value in zip(ranked, rescored):
            scores[chunk_id]["rerank"] = round(float(value), 4)
        order = sorted(range(len(ranked)), key=lambda n: (-float(rescored[n]), n))  # ties keep the first order
        return [ranked[n] for n in order]

    def _complete(self, snapshot: Snapshot, question: str, vector: np.ndarray, ids: list[int], scores: Scores) -> None:
        """Give each final chunk the scores of the stages that did not find it: dense always, lexical in hybrid."""
        lacking = [i for i in ids if "dense" not in scores[i]]
        if lacking:
            try:
                stored = snapshot.index.vectors(lacking)
            except (RuntimeError, KeyError):
                raise IndexCorruptError(
                    f"{snapshot.folder}: the lexical index names chunks the vector index lacks; "
                    "rebuild with `ragtune ingest --rebuild DOCS`"
                ) from None
            for chunk_id, value in zip(lacking, similarity(snapshot.index.space, vector, stored)):
                scores[chunk_id]["dense"] = round(float(value), 4)
        lacking = [i for i in ids if "lexical" not in scores[i]] if self.lexical else []
        expression = match_expression(question) if lacking else None
        found = dict(lexical_index(snapshot).search_lexical(expression, len(lacking), lacking)) if expression else {}
        for chunk_id in lacking:
            scores[chunk_id]["lexical"] = round(found.get(chunk_id, 0.0), 4)  # 0: none of its words match


def dense_ranking(snapshot: Snapshot, vector: np.ndarray, depth: int) -> tuple[list[int], Scores]:
    labels, found = snapshot.index.search(vector, depth)
    ranked = [int(label) for label in labels]
    return ranked, {i: {"dense": round(float(s), 4)} for i, s in zip(ranked, found)}


def lexical_index(snapshot: Snapshot) -> ChunkStore:
    """The snapshot's lexical index; a lexical retriever's check has made sure that it has one."""
    store = snapshot.store.lexical_index()
    assert store is not None, "a lexical stage over chunks without a lexical index"
    return store


def lexical_ranking(snapshot: Snapshot, question: str, depth: int) -> tuple[list[int], Scores]:
    lexical = lexical_index(snapshot)
    expression = match_expression(question, lexical.term_counts, snapshot.manifest["count"])
    hits = lexical.search_lexical(expression, depth) if expression else []
    return [i for i, _ in hits], {i: {"lexical": round(s, 4)} for i, s in hits}


class DenseRetriever(RankingRetriever):
    """The chunk vectors nearest the question's embedding."""

    stage = "dense"

    def rank(self, snapshot: Snapshot, question: str, vector: np.ndarray, depth: int) -> tuple[list[int], Scores]:
        return dense_ranking(snapshot, vector, depth)


class LexicalRetriever(RankingRetriever):
    """BM25 over the chunks' words, numbers and codes (the lexical index in chunks.sqlite)."""

    stage = "lexical"
    lexical = True

    def rank(self, snapshot: Snapshot, question: str, vector: np.ndarray, depth: int) -> tuple[list[int], Scores]:
        return lexical_ranking(snapshot, question, depth)


class HybridRetriever(RankingRetriever):
    """The dense and the lexical rankings of rag.candidates each, fused as rag.hybrid says."""

    stage = "fused"
    lexical = True

    def rank(self, snapshot: Snapshot, question: str, vector: np.ndarray, depth: int) -> tuple[list[int], Scores]:
        rag = self.config.rag
        each = max(depth, rag.candidates)
        dense_ranked, scores = dense_ranking(snapshot, vector, each)
        lexical_ranked, lexical = lexical_ranking(snapshot, question, each)
        for chunk_id, own in lexical.items():
            scores.setdefault(chunk_id, {}).update(own)
        dense = [(i, scores[i]["dense"]) for i in dense_ranked]
        words = [(i, scores[i]["lexical"]) for i in lexical_ranked]
        if rag.hybrid.method == "rrf":
            fused = fusion.rrf(dense, words, rag.hybrid.rrf_k, rag.hybrid.dense_weight)
        else:
            fused = fusion.weighted(dense, words, rag.hybrid.dense_weight)
        for chunk_id, value in fused:
            scores[chunk_id]["fused"] = round(value, 6)  # rrf scores are small: 4 places would tie them
        return [i for i, _ in fused], scores


def similarity(space: str, query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """The vector index's score (higher is closer) of each row of `vectors` against `query`."""
    query, vectors = np.asarray(query, dtype=np.float32), np.asarray(vectors, dtype=np.float32)
    if space == "l2":
        return -np.sum((vectors - query) ** 2, axis=1)
    if space == "cosine":
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors @ query


RETRIEVERS: dict[str, type[RankingRetriever]] = {
    "dense": DenseRetriever,
    "lexical": LexicalRetriever,
    "hybrid": HybridRetriever,
}


def build_retriever(root: Path, config: Config, embedder: Embedder) -> Retriever:
    """The retriever `rag.retriever` names, over the index at `root`, with its reranker loaded if any."""
    cls = RETRIEVERS.get(config.rag.retriever)
    if cls is None:
        raise ConfigError(f"rag.retriever: should be one of {', '.join(RETRIEVERS)}, got {config.rag.retriever!r}")
    reranker = load_reranker(config.rag.rerank) if config.rag.rerank.model else None
    return cls(CurrentIndex(root, config, embedder.dim), config, embedder, reranker)
