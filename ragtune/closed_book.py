"""The base and finetune Answerer: the LM alone, adapted or not, answering with the same events as RAG."""

from __future__ import annotations

import time
from collections.abc import Sequence

from models.answer import Answer, Done, EventStream, Message, choice_events, collect, generated, sampling_params
from models.config import Config
from models.generate import Generator, SamplingParams


class ClosedBookAnswerer:
    def __init__(self, config: Config, generator: Generator) -> None:
        self.config, self.generator = config, generator

    def events(
        self, question: str, conversation: Sequence[Message] = (), params: SamplingParams | None = None
    ) -> EventStream:
        """The reply to the earlier turns of `conversation` and then `question`, as the user's last turn; with an
        empty question, the reply to `conversation` as it stands (an API request whose last turn is not the user's)."""
        started = time.perf_counter()
        stream = self.generator.stream(_messages(question, conversation), params or sampling_params(self.config))
        yield from generated(stream, started)
        yield Done()

    def choose(self, question: str, choices: tuple[str, ...]) -> Answer:
        """The likeliest of `choices` as the start of the reply to the same single user turn."""
        events = choice_events(self.generator, _messages(question, ()), choices, time.perf_counter())
        return collect(question, events)


def _messages(question: str, conversation: Sequence[Message]) -> list[Message]:
    # A question alone is the single user turn the adapter was trained on (prompt/completion pairs).
    asked = [{"role": "user", "content": question.strip()}] if question.strip() else []
    return [*conversation, *asked]
