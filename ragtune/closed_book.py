"""Answer without retrieval (modes base and finetune): the LM alone, adapted or not, same Answer shape as RAG."""

from __future__ import annotations

import time
from collections.abc import Iterator

from models.config import Config
from models.generate import Generator
from rag.pipeline import Answer, pick_choice, record_stream, sampling_params


class ClosedBookPipeline:
    def __init__(self, config: Config, generator: Generator) -> None:
        self.config, self.generator = config, generator

    def stream(self, question: str, answer: Answer | None = None) -> Iterator[str]:
        answer = answer if answer is not None else Answer(question)
        started = time.perf_counter()
        # The same single user turn the adapter was trained on (prompt/completion pairs).
        stream = self.generator.stream([{"role": "user", "content": question.strip()}], sampling_params(self.config))
        yield from record_stream(stream, answer, started)

    def choose(self, question: str, choices: tuple[str, ...]) -> Answer:
        """The likeliest of `choices` as the start of the reply to the same single user turn."""
        answer = Answer(question)
        messages = [{"role": "user", "content": question.strip()}]
        return pick_choice(self.generator, messages, choices, answer, time.perf_counter())

    def answer(self, question: str) -> Answer:
        result = Answer(question)
        for _ in self.stream(question, result):
            pass
        return result
