"""Answer a question: retrieve sources, fence them into the prompt, stream the answer, note its citations."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.config import Config
from models.generate import Generator, SamplingParams, TokenStream, Usage
from rag.prompt import NOT_FOUND, Passage, build_messages, cited_numbers, fit_passages, is_refusal
from rag.retrieve import Retriever, Source


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


class RagPipeline:
    def __init__(self, config: Config, retriever: Retriever, generator: Generator) -> None:
        self.config, self.retriever, self.generator = config, retriever, generator

    def stream(
        self, question: str, answer: Answer | None = None, params: SamplingParams | None = None
    ) -> Iterator[str]:
        """Yield the answer's text as it is generated; `answer` is filled in as a side record."""
        answer = answer if answer is not None else Answer(question)
        started = time.perf_counter()
        retrieval = self.retriever.retrieve(question)
        hits, answer.generation = retrieval.sources, retrieval.generation
        answer.timings.update(retrieval.timings)
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
