"""The models behind the server: one base LM, its adapters, the embedder and the index, shared safely.

Every served model id is an answer mode (models/modes.py), with an adapter for the adapted ones:
`base`, `rag`, `finetune:NAME` and `hybrid:NAME`. All are generators of one loaded LanguageModel,
which loads each adapter once, on first use, over the same base weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from finetune.adapters import base_fingerprint, check_base, list_adapters, usable_adapter
from models.answer import Answer, AnswerBuilder, AnswerEvent, EventStream, Sources, Timings
from models.config import Config
from models.embedders import build_embedder
from models.embedding import Embedder
from models.errors import InputError, RagtuneError
from models.generate import AdapterRef, Generator, LanguageModel, SamplingParams, load_language_model
from models.modes import MODES
from models.paths import index_dir
from rag.collection import current_generation, served_generation
from rag.pipeline import RagAnswerer
from rag.retrieve import build_retriever
from ragtune.closed_book import ClosedBookAnswerer
from ragtune.serve.admission import Admission


class UnknownModelError(InputError):
    """A request names a model id the server does not serve."""


class BusyError(Exception):
    """The admission queue is full; the client should retry later (HTTP 429)."""


END = object()  # what next() returns once an answer's events run out


class Reply:
    """A started answer: iterate it for its events (each is also recorded); `answer` is complete once it is
    exhausted. Closing it stops generation."""

    def __init__(self, question: str, events: EventStream, checked: bool) -> None:
        self._events, self._built = events, AnswerBuilder(question)
        self.checked = checked  # rag and hybrid: the answer has a Verdict (refused, cited, supports)

    def __iter__(self) -> Reply:
        return self

    def __next__(self) -> AnswerEvent:
        return self._built.add(next(self._events))

    def begin(self) -> AnswerEvent | object:
        """The first event once generation has begun (END if none comes), the events before it recorded: so a
        model that cannot start fails before a streamed reply's headers are sent, as an HTTP error."""
        for event in self:
            if not isinstance(event, (Sources, Timings)):
                return event
        return END

    def close(self) -> None:
        self._events.close()

    @property
    def answer(self) -> Answer:
        return self._built.answer


class Engine:
    def __init__(self, config: Config, embedder: Embedder | None = None, lm: LanguageModel | None = None) -> None:
        self.config = config
        self.embedder = embedder or build_embedder(config.embedder)
        self.lm = lm or load_language_model(config.llm)
        self.retriever = build_retriever(index_dir(config), config, self.embedder)
        self.fingerprint = base_fingerprint(self.lm.path)  # once: hashing a large local model is slow
        self._admission = Admission(
            config.serve.max_queue, lambda held: BusyError(f"{held} requests are already queued (serve.max_queue)")
        )
        self._batch = None
        if config.serve.parallel > 1 and getattr(self.lm, "backend", None) == "llamacpp":
            from models.engines.llamacpp_batch import BatchDecoder

            self._batch = BatchDecoder(self.lm, config.serve.parallel)  # streams of every request decode together

    @property
    def queued(self) -> int:
        """Requests admitted and not yet finished."""
        return self._admission.held

    # -- model ids ---------------------------------------------------------------------------------
    def usable_adapters(self) -> list[str]:
        """LoRA adapters trained on this server's base model."""
        names = []
        for info in list_adapters():
            if info.manifest.get("method") == "full":
                continue
            try:
                check_base(info, self.lm.path, self.fingerprint)
            except RagtuneError:  # trained on another base model: not offered here
                continue
            names.append(info.name)
        return names

    def model_ids(self) -> list[str]:
        """Each plain mode's name, then `MODE:ADAPTER` for each adapted mode and usable adapter."""
        adapters = self.usable_adapters()
        plain = [name for name, mode in MODES.items() if not mode.adapted]
        return plain + [f"{name}:{a}" for name, mode in MODES.items() if mode.adapted for a in adapters]

    def index_generation(self) -> str | None:
        # A node without the index folder serves the generation its engine (index.uri) names.
        return current_generation(index_dir(self.config)) or served_generation(self.config.index)

    # -- admission ---------------------------------------------------------------------------------
    def admit(self) -> Callable[[], None]:
        """Take one of `serve.max_queue` places or raise BusyError at once; returns an idempotent release."""
        return self._admission.take()

    # -- generation ---------------------------------------------------------------------------------
    def _generator(self, adapter: str | None) -> Generator:
        if adapter is not None and not self.lm.has_adapter(adapter):  # verified (every byte hashed) once, first use
            info = usable_adapter(adapter, self.lm.path, self.fingerprint)
            self.lm.load_adapter(AdapterRef(info.name, info.path))
        generator = self.lm.generator(adapter) if adapter is not None else self.lm.generator()
        if self._batch is not None:
            from models.engines.llamacpp_batch import BatchedGenerator

            return BatchedGenerator(generator, self._batch)
        return generator

    def reply(self, model_id: str, messages: list[dict[str, str]], params: SamplingParams) -> Reply:
        """Start answering `messages` with `model_id`; raises UnknownModelError for other ids."""
        name, _, adapter = model_id.partition(":")
        mode = MODES.get(name)
        if mode is None or mode.adapted != bool(adapter) or (adapter and adapter not in self.usable_adapters()):
            raise UnknownModelError(f"model {model_id!r} does not exist; GET /v1/models lists the served models")
        generator = self._generator(adapter or None)
        if mode.retrieves:
            # The last user turn is the question; every turn before it (system turns too) is its conversation.
            last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "user"), None)
            question = messages[last]["content"] if last is not None else ""
            if not question.strip():
                raise InputError("messages: a rag or hybrid request needs a user message holding the question")
            answerer = RagAnswerer(replace(self.config, mode="rag"), self.retriever, generator)
            earlier = messages[:last]
            return Reply(question, answerer.events(question, earlier, params=params), checked=True)
        # The LM alone answers the conversation as the client sent it, its last user turn as the question.
        asks = messages[-1]["role"] == "user"
        question, earlier = (messages[-1]["content"], messages[:-1]) if asks else ("", messages)
        events = ClosedBookAnswerer(self.config, generator).events(question, earlier, params)
        return Reply(question, events, checked=False)

    def embed(self, texts: list[str]) -> tuple[Any, int]:
        tokens = sum(len(self.embedder.token_offsets(t)) for t in texts)
        return self.embedder.encode(texts), tokens
