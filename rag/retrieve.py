"""Retrieval behind one interface: a question in, numbered sources with their per-stage scores out.

`RagPipeline` and the app see only `Retriever.retrieve(question) -> Retrieval`; each way of finding
chunks is one class registered in RETRIEVERS and chosen by `rag.retriever`. A source's `score` is the
retriever's final score, the one `rag.min_score` applies to; `scores` keeps every stage's own.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from models.config import Config
from models.embedding import Embedder
from models.errors import ConfigError, IndexCorruptError
from rag.collection import Snapshot, current_generation, expectation, missing_index, open_snapshot


@dataclass(frozen=True)
class Source:
    number: int  # 1-based, as the prompt and the answer's [n] markers name it
    path: str
    chunk: int
    locator: str
    score: float  # the retriever's final score (what rag.min_score is compared with)
    text: str
    scores: dict[str, float] = field(default_factory=dict)  # each stage's score, e.g. {"dense": 0.61}


@dataclass
class Retrieval:
    sources: list[Source]
    generation: str  # the index generation searched
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, e.g. embed_s, search_s


class Retriever(Protocol):
    def check(self) -> None:
        """Fail now (missing or damaged index, wrong embedder) rather than at the first question."""
        ...

    def retrieve(self, question: str) -> Retrieval: ...


class CurrentIndex:
    """Whatever generation CURRENT names, reopened when an ingest has published a newer one."""

    def __init__(self, root: Path, config: Config, dim: int) -> None:
        self.root, self.config, self.dim = root, config, dim
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()

    def snapshot(self) -> Snapshot:
        with self._lock:
            generation = current_generation(self.root)
            if generation is None:
                raise missing_index(self.root)
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


class DenseRetriever:
    """Embed the question, take the rag.top_k nearest chunk vectors, keep those scoring >= rag.min_score."""

    def __init__(self, index: CurrentIndex, config: Config, embedder: Embedder) -> None:
        self.index, self.config, self.embedder = index, config, embedder

    def check(self) -> None:
        self.index.snapshot()

    def retrieve(self, question: str) -> Retrieval:
        snapshot = self.index.snapshot()
        timings: dict[str, float] = {}
        started = time.perf_counter()
        vector = self.embedder.encode([question])[0]
        timings["embed_s"] = time.perf_counter() - started
        started = time.perf_counter()
        labels, scores = snapshot.index.search(vector, self.config.rag.top_k)
        chunks = snapshot.store.chunks([int(label) for label in labels])
        timings["search_s"] = time.perf_counter() - started
        sources: list[Source] = []
        for label, raw in zip(labels, scores):
            chunk = chunks.get(int(label))
            score = round(float(raw), 4)
            if chunk is not None and raw >= self.config.rag.min_score:
                number = len(sources) + 1
                sources.append(
                    Source(number, chunk.path, chunk.ordinal, chunk.locator, score, chunk.text, {"dense": score})
                )
        return Retrieval(sources, snapshot.generation, timings)


RETRIEVERS = {"dense": DenseRetriever}


def build_retriever(root: Path, config: Config, embedder: Embedder) -> Retriever:
    """The retriever `rag.retriever` names, over the index at `root`."""
    cls = RETRIEVERS.get(config.rag.retriever)
    if cls is None:
        raise ConfigError(f"rag.retriever: should be one of {', '.join(RETRIEVERS)}, got {config.rag.retriever!r}")
    return cls(CurrentIndex(root, config, embedder.dim), config, embedder)
