"""The models behind the server: one base LM, its adapters, the embedder and the index, shared safely.

Every served model id maps to a generator over the same weights: `base` (no adapter), `rag`,
`finetune:NAME` and `hybrid:NAME`. Adapters load into one PeftModel on first use; a shared lock lets
one request generate at a time and selects that request's adapter while it holds the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

from finetune.adapters import base_fingerprint, check_base, list_adapters, read_adapter
from models.config import Config
from models.embedding import Embedder, build_embedder
from models.errors import InputError, RagtuneError
from models.generate import HFGenerator, SamplingParams, Usage
from models.loading import load_lm
from models.paths import index_dir
from rag.collection import current_generation
from rag.pipeline import Answer, RagPipeline, Retriever, Source


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


class Engine:
    def __init__(self, config: Config, embedder: Embedder | None = None, lm: Any = None) -> None:
        self.config = config
        self.embedder = embedder or build_embedder(config.embedder)
        self.lm = lm or load_lm(config.llm)
        self.retriever = Retriever(index_dir(config), config, self.embedder)
        self.fingerprint = base_fingerprint(self.lm.path)  # once: hashing a large local model is slow
        self.lock = threading.Lock()  # held while generating or changing the model
        self._peft: Any = None  # the PeftModel, once an adapter has been loaded
        self._admitted = 0
        self._admission = threading.Lock()

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
        adapters = self.usable_adapters()
        return ["base", "rag"] + [f"finetune:{a}" for a in adapters] + [f"hybrid:{a}" for a in adapters]

    def index_generation(self) -> str | None:
        return current_generation(index_dir(self.config))

    # -- admission ---------------------------------------------------------------------------------
    def admit(self) -> Callable[[], None]:
        """Take one of `serve.max_queue` places or raise BusyError at once; returns an idempotent release."""
        with self._admission:
            if self._admitted >= self.config.serve.max_queue:
                raise BusyError(f"{self._admitted} requests are already queued (serve.max_queue)")
            self._admitted += 1
        released = threading.Event()

        def release() -> None:
            with self._admission:
                if not released.is_set():
                    released.set()
                    self._admitted -= 1

        return release

    # -- generation --------------------------------------------------------------------------------
    def _generator(self, adapter: str | None) -> HFGenerator:
        if adapter is not None:
            self._load_adapter(adapter)
        model = self._peft if self._peft is not None else self.lm.model
        activate = self._activation(adapter)
        name = self.config.llm.model + (f"+{adapter}" if adapter else "")
        return HFGenerator(model, self.lm.tokenizer, name, self.config.llm.context_window, self.lock, activate)

    def _activation(self, adapter: str | None):
        def activate() -> AbstractContextManager[Any]:
            if self._peft is None:
                return nullcontext()
            if adapter is None:
                return self._peft.disable_adapter()
            self._peft.set_adapter(adapter)
            return nullcontext()

        return activate

    def _load_adapter(self, name: str) -> None:
        from peft import PeftModel

        if self._peft is not None and name in self._peft.peft_config:
            return
        info = read_adapter(name)
        check_base(info, self.lm.path, self.fingerprint)
        with self.lock:  # no request generates while the weights change
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(self.lm.model, str(info.path), adapter_name=name)
            elif name not in self._peft.peft_config:
                self._peft.load_adapter(str(info.path), adapter_name=name)
            self._peft.eval()

    def reply(self, model_id: str, messages: list[dict[str, str]], params: SamplingParams) -> Reply:
        """Start answering `messages` with `model_id`; raises UnknownModelError for other ids."""
        kind, _, adapter = model_id.partition(":")
        if model_id not in ("base", "rag") and not (kind in ("finetune", "hybrid") and adapter):
            raise UnknownModelError(f"model {model_id!r} does not exist; GET /v1/models lists the served models")
        if adapter and adapter not in self.usable_adapters():
            raise UnknownModelError(f"model {model_id!r} does not exist; GET /v1/models lists the served models")
        generator = self._generator(adapter or None)
        if kind in ("rag", "hybrid"):
            return self._rag_reply(generator, messages, params)
        stream = generator.stream(messages, params)
        reply = Reply(iter(()))

        def pieces() -> Iterator[str]:
            yield from stream
            reply.usage = stream.usage

        reply.pieces = pieces()
        return reply

    def _rag_reply(self, generator: HFGenerator, messages: list[dict[str, str]], params: SamplingParams) -> Reply:
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        if not question.strip():
            raise InputError("messages: a rag or hybrid request needs a user message holding the question")
        pipeline = RagPipeline(replace(self.config, mode="rag"), self.retriever, generator)
        answer = Answer(question)
        reply = Reply(iter(()))

        def pieces() -> Iterator[str]:
            yield from pipeline.stream(question, answer, params)
            reply.sources, reply.usage = answer.sources, answer.usage

        reply.pieces = pieces()
        return reply

    def embed(self, texts: list[str]) -> tuple[Any, int]:
        tokens = sum(len(self.embedder.token_offsets(t)) for t in texts)
        return self.embedder.encode(texts), tokens
