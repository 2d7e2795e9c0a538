"""The models behind the server: one base LM, its adapters, the embedder and the index, shared safely.

Every served model id is an answer mode (models/modes.py), with an adapter for the adapted ones:
`base`, `rag`, `finetune:NAME` and `hybrid:NAME`. All are generators of one loaded LanguageModel,
which loads each adapter once, on first use, over the same base weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from finetune.adapters import base_fingerprint, check_base, list_adapters, usable_adapter
from models.config import Config
from models.embedding import Embedder, build_embedder
from models.errors import InputError, RagtuneError
from models.generate import AdapterRef, Generator, LanguageModel, SamplingParams, Usage, load_language_model
from models.modes import MODES
from models.paths import index_dir
from rag.collection import current_generation, served_generation
from rag.pipeline import Answer, RagPipeline
from rag.retrieve import Source, build_retriever
from ragtune.serve.admission import Admission


class UnknownModelError(InputError):
    """A request names a model id the server does not serve."""


class BusyError(Exception):
    """The admission queue is full; the client should retry later (HTTP 429)."""


@dataclass
class Reply:
    """A streamed answer: iterate `pieces`; `usage` and `sources` are complete once it is exhausted."""

    pieces: Iterator[str]
    sources: list[Source] = field(default_factory=list)
    usage: Usage | None = None
    # rag and hybrid: the answer's record (refused, cited, supports), complete once `pieces` is exhausted.
    answer: Answer | None = None


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
        if adapter is None:
            return self.lm.generator()
        if not self.lm.has_adapter(adapter):  # verified (every byte hashed) once, when it is first loaded
            info = usable_adapter(adapter, self.lm.path, self.fingerprint)
            self.lm.load_adapter(AdapterRef(info.name, info.path))
        return self.lm.generator(adapter)

    def reply(self, model_id: str, messages: list[dict[str, str]], params: SamplingParams) -> Reply:
        """Start answering `messages` with `model_id`; raises UnknownModelError for other ids."""
        name, _, adapter = model_id.partition(":")
        mode = MODES.get(name)
        if mode is None or mode.adapted != bool(adapter) or (adapter and adapter not in self.usable_adapters()):
            raise UnknownModelError(f"model {model_id!r} does not exist; GET /v1/models lists the served models")
        generator = self._generator(adapter or None)
        if mode.retrieves:
            return self._rag_reply(generator, messages, params)
        stream = generator.stream(messages, params)
        reply = Reply(iter(()))

        def pieces() -> Iterator[str]:
            yield from stream
            reply.usage = stream.usage

        reply.pieces = pieces()
        return reply

    def _rag_reply(self, generator: Generator, messages: list[dict[str, str]], params: SamplingParams) -> Reply:
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        if not question.strip():
            raise InputError("messages: a rag or hybrid request needs a user message holding the question")
        pipeline = RagPipeline(replace(self.config, mode="rag"), self.retriever, generator)
        answer = Answer(question)
        reply = Reply(iter(()))

        def pieces() -> Iterator[str]:
            yield from pipeline.stream(question, answer, params)
            reply.sources, reply.usage, reply.answer = answer.sources, answer.usage, answer

        reply.pieces = pieces()
        return reply

    def embed(self, texts: list[str]) -> tuple[Any, int]:
        tokens = sum(len(self.embedder.token_offsets(t)) for t in texts)
        return self.embedder.encode(texts), tokens
