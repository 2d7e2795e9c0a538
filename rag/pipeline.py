"""Answer a question: embed, search the current index generation, fence the hits, stream the answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.config import Config
from models.embedding import Embedder
from models.errors import IndexCorruptError
from models.generate import Generator, SamplingParams, TokenStream, Usage
from rag.collection import Snapshot, current_generation, expectation, missing_index, open_snapshot
from rag.prompt import NOT_FOUND, Passage, build_messages, cited_numbers, fit_passages, is_refusal


@dataclass(frozen=True)
class Source:
    number: int
    path: str
    chunk: int
    locator: str
    score: float
    text: str


@dataclass
class Answer:
    question: str
    text: str = ""
    sources: list[Source] = field(default_factory=list)
    cited: list[int] = field(default_factory=list)
    refused: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    usage: Usage | None = None
    generation: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["usage"] = (
            None
            if self.usage is None
            else {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
                "finish_reason": self.usage.finish_reason,
            }
        )
        return data


def sampling_params(config: Config) -> SamplingParams:
    llm = config.llm
    return SamplingParams(
        max_new_tokens=llm.max_new_tokens, temperature=llm.temperature, top_p=llm.top_p, seed=llm.seed
    )


class Retriever:
    """Searches whatever generation CURRENT names, reopening it when an ingest has published a newer one."""

    def __init__(self, root: Path, config: Config, embedder: Embedder) -> None:
        self.root, self.config, self.embedder = root, config, embedder
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()

    def snapshot(self) -> Snapshot:
        with self._lock:
            generation = current_generation(self.root)
            if generation is None:
                raise missing_index(self.root)
            if self._snapshot is None or self._snapshot.generation != generation:
                expect = expectation(self.config, self.embedder.dim)
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

    def search(self, question: str, timings: dict[str, float]) -> tuple[list[Source], str]:
        snapshot = self.snapshot()
        started = time.perf_counter()
        vector = self.embedder.encode([question])[0]
        timings["embed_s"] = time.perf_counter() - started
        started = time.perf_counter()
        labels, scores = snapshot.index.search(vector, self.config.rag.top_k)
        chunks = snapshot.store.chunks([int(label) for label in labels])
        timings["search_s"] = time.perf_counter() - started
        sources = []
        for label, score in zip(labels, scores):
            chunk = chunks.get(int(label))
            if chunk is not None and score >= self.config.rag.min_score:
                sources.append(
                    Source(
                        len(sources) + 1, chunk.path, chunk.ordinal, chunk.locator, round(float(score), 4), chunk.text
                    )
                )
        return sources, snapshot.generation


class RagPipeline:
    def __init__(self, config: Config, retriever: Retriever, generator: Generator) -> None:
        self.config, self.retriever, self.generator = config, retriever, generator

    def stream(
        self, question: str, answer: Answer | None = None, params: SamplingParams | None = None
    ) -> Iterator[str]:
        """Yield the answer's text as it is generated; `answer` is filled in as a side record."""
        answer = answer if answer is not None else Answer(question)
        started = time.perf_counter()
        hits, answer.generation = self.retriever.search(question, answer.timings)
        passages = [Passage(s.number, _label(s), s.text) for s in hits]
        passages = fit_passages(passages, self.config.rag.max_context_tokens, self.generator.count_tokens)
        answer.sources = hits[: len(passages)]
        if not passages:
            # Nothing scored above rag.min_score: say so rather than let the model guess.
            answer.text, answer.refused = NOT_FOUND, True
            answer.timings["first_token_s"] = answer.timings["total_s"] = time.perf_counter() - started
            yield NOT_FOUND
            return
        stream = self.generator.stream(build_messages(question, passages), params or sampling_params(self.config))
        yield from record_stream(stream, answer, started)
        answer.refused = is_refusal(answer.text)
        answer.cited = [n for n in cited_numbers(answer.text) if 1 <= n <= len(answer.sources)]

    def answer(self, question: str) -> Answer:
        result = Answer(question)
        for _ in self.stream(question, result):
            pass
        return result


def record_stream(stream: TokenStream, answer: Answer, started: float) -> Iterator[str]:
    """Pass a token stream through, recording its text, usage and timings (from `started`) in `answer`."""
    pieces = []
    for piece in stream:
        if not pieces:
            answer.timings["first_token_s"] = time.perf_counter() - started
        pieces.append(piece)
        yield piece
    answer.timings.setdefault("first_token_s", time.perf_counter() - started)  # an empty answer
    answer.text = "".join(pieces).strip()
    answer.usage = stream.usage
    answer.timings["generate_s"] = stream.usage.total_s
    answer.timings["tokens_per_s"] = stream.usage.tokens_per_s
    answer.timings["total_s"] = time.perf_counter() - started


def _label(source: Source) -> str:
    name = Path(source.path).name
    return f"{name} ({source.locator})" if source.locator else name
