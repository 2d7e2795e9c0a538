"""Generation behind one small interface: chat messages in, streamed text out, usage and timings after.

`rag/`, `finetune/` and the app only see `Generator.stream(...)`, so another engine (a faster CPU
runtime, a server) can be added here without touching them.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from models.errors import ModelError


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int = 0


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_s: float | None = None
    total_s: float = 0.0
    finish_reason: str = "stop"  # stop (end of turn or a stop string) | length (max_new_tokens reached)

    @property
    def tokens_per_s(self) -> float:
        """Decode speed: tokens after the first over the time after the first (prompt processing excluded)."""
        if self.first_token_s is None or self.completion_tokens < 2 or self.total_s <= self.first_token_s:
            return 0.0
        return (self.completion_tokens - 1) / (self.total_s - self.first_token_s)


class TokenStream(Protocol):
    usage: Usage

    def __iter__(self) -> Iterator[str]: ...


class Generator(Protocol):
    name: str

    def stream(self, messages: list[dict[str, str]], params: SamplingParams) -> TokenStream: ...

    def count_tokens(self, text: str) -> int: ...


class HFGenerator:
    """A Hugging Face causal LM run with `model.generate` on a worker thread, one request at a time."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        name: str,
        context_window: int,
        lock: threading.Lock | None = None,
        activate: Callable[[], AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.context_window = context_window
        # One generate at a time: a second would halve both. Generators over one shared model (base and
        # adapters of one PeftModel) share the lock, and `activate` selects their adapter while it is held.
        self._lock = lock or threading.Lock()
        self._activate = activate or nullcontext

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_chat(self, messages: list[dict[str, str]]) -> torch.Tensor:
        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )["input_ids"]
        if ids.shape[1] > self.context_window:
            raise ModelError(
                f"the prompt is {ids.shape[1]} tokens, over llm.context_window={self.context_window}; "
                "lower rag.max_context_tokens or shorten the question"
            )
        return ids

    def stream(self, messages: list[dict[str, str]], params: SamplingParams) -> _HFStream:
        return _HFStream(self, self.encode_chat(messages), params)


class _QueueStreamer:
    """Receives token ids from `generate` (the transformers streamer protocol) and queues them."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate first hands over the prompt itself
            self._prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.queue.put(token)

    def end(self) -> None:
        self.queue.put(None)


class _CancelOnEvent:
    """A stopping criterion that ends generation when the consumer has gone (disconnect, Ctrl-C, stop string)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


@dataclass
class _HFStream:
    generator: HFGenerator
    input_ids: torch.Tensor
    params: SamplingParams
    usage: Usage = field(default_factory=Usage)

    def __iter__(self) -> Iterator[str]:
        from transformers import StoppingCriteriaList

        gen = self.generator
        cancel = threading.Event()
        streamer = _QueueStreamer()
        errors: list[BaseException] = []
        self.usage.prompt_tokens = int(self.input_ids.shape[1])
        sampling = self.params.temperature > 0
        kwargs: dict[str, Any] = {
            "input_ids": self.input_ids.to(gen.model.device),
            "attention_mask": torch.ones_like(self.input_ids).to(gen.model.device),
            "max_new_tokens": self.params.max_new_tokens,
            "do_sample": sampling,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_CancelOnEvent(cancel)]),
            "pad_token_id": _pad_id(gen.tokenizer),
        }
        if sampling:
            kwargs.update(temperature=self.params.temperature, top_p=self.params.top_p)
        else:  # silence the model's own sampling defaults, which greedy decoding ignores
            kwargs.update(temperature=None, top_p=None, top_k=None)

        def work() -> None:
            try:
                with gen._lock, gen._activate(), torch.inference_mode():
                    if cancel.is_set():  # the consumer left while this request waited for the model
                        return
                    if sampling:
                        torch.manual_seed(self.params.seed)
                    gen.model.generate(**kwargs)
            except BaseException as exc:  # re-raised in the consumer's thread
                errors.append(exc)
            finally:
                streamer.end()

        started = time.perf_counter()
        worker = threading.Thread(target=work, name="ragtune-generate", daemon=True)
        worker.start()
        ids: list[int] = []
        emitted = text = ""
        eos = set(_as_list(gen.model.generation_config.eos_token_id)) | {gen.tokenizer.eos_token_id}
        try:
            while (token := streamer.queue.get()) is not None:
                if self.usage.first_token_s is None:
                    self.usage.first_token_s = time.perf_counter() - started
                if token in eos:
                    continue
                ids.append(token)
                text = gen.tokenizer.decode(ids, skip_special_tokens=True)
                if text.endswith("\ufffd"):  # half a multi-byte character: wait for the rest
                    continue
                stop_at = _find_stop(text, self.params.stop)
                if stop_at is not None:
                    text = text[:stop_at]
                    cancel.set()
                # Hold back an ending that may be the start of a stop string, until the next token decides.
                ready = text if cancel.is_set() else text[: len(text) - held_back(text, self.params.stop)]
                piece, emitted = ready[len(emitted) :], max(ready, emitted, key=len)
                if piece:
                    yield piece
                if cancel.is_set():
                    break
            else:  # the model finished: what was held back is no stop string
                if len(text) > len(emitted) and _find_stop(text, self.params.stop) is None:
                    yield text[len(emitted) :]
        finally:
            cancel.set()
            worker.join()
            self.usage.completion_tokens = len(ids)
            self.usage.total_s = time.perf_counter() - started
            if errors:
                raise ModelError(f"generation failed in {gen.name}: {errors[0]}") from errors[0]
            if len(ids) >= self.params.max_new_tokens:
                self.usage.finish_reason = "length"


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest ending of `text` that is the start (not the whole) of a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


def _find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def collect(stream: TokenStream) -> str:
    """Run a stream to the end and return its text."""
    return "".join(stream)
