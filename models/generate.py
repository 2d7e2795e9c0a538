"""Generation behind one small interface: chat messages in, streamed text out, usage and timings after.

`rag/`, `finetune/` and the app only see `Generator.stream(...)` and the factory below, keyed by
`llm.backend`; each engine is one module in `models/engines/` that turns a prompt into decoding steps.
The logic every engine needs (stop strings held back until decided, first-token timing,
`finish_reason`, cancellation when the consumer leaves) lives once here, in `DecodeStream`.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from models.config import LLMConfig
from models.errors import ConfigError, ModelError

# Notes for the user from the library layer go through logging, never print: with no handler configured
# (the CLI configures none) Python's last-resort handler prints a warning's bare text to stderr; an
# application with its own logging setup routes or silences "ragtune.engine" as it likes.
log = logging.getLogger("ragtune.engine")


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


@dataclass(frozen=True)
class Step:
    """One decoded token as an engine reports it: the answer's whole text so far and its token count.

    An end-of-turn token is a step whose text and count do not grow (it still marks the first token).
    """

    text: str
    tokens: int


class TokenStream(Protocol):
    usage: Usage

    def __iter__(self) -> Iterator[str]: ...


class Generator(Protocol):
    """One model (with or without an adapter) that answers chat messages."""

    name: str

    def stream(self, messages: list[dict[str, str]], params: SamplingParams) -> TokenStream: ...

    def count_tokens(self, text: str) -> int: ...

    def continuation_logprobs(self, messages: list[dict[str, str]], continuations: list[str]) -> list[float]:
        """Log-probability of each continuation as the start of the assistant's reply to `messages`.

        Closed-set questions are scored with it (the likelihood of each choice, as reference harnesses do);
        an engine that cannot expose log-probabilities raises ModelError saying so.
        """
        ...


@dataclass(frozen=True)
class AdapterRef:
    """A verified adapter folder (the app layer checks manifest and base model before handing it over)."""

    name: str
    path: Path


class LanguageModel(Protocol):
    """A loaded base model that hands out generators, for itself and for each adapter loaded into it.

    Generators of one LanguageModel share its weights: switching adapters never loads the base again.
    """

    name: str  # what llm.model says
    backend: str  # the engine that runs it (llm.backend, with auto resolved)
    path: Path  # the weights actually loaded (adapters record this base's fingerprint)
    dtype: str  # e.g. "bfloat16"
    device: str

    def has_adapter(self, name: str) -> bool: ...

    def load_adapter(self, adapter: AdapterRef) -> None: ...

    def generator(self, adapter: str | None = None) -> Generator: ...


# llm.backend -> "module:class" of a LanguageModel with a `load(config, progress)` classmethod. Imported
# only when chosen, so an engine's library is needed only by those who use it. ("auto" is no engine:
# resolve_backend turns it into one of these.)
GENERATOR_BACKENDS = {
    "transformers": "models.engines.transformers:TransformersLM",
    "llamacpp": "models.engines.llamacpp:LlamaCppLM",
    "openai": "models.engines.openai:OpenAILM",
}
_fallback_said: set[str] = set()


def resolve_backend(config: LLMConfig) -> str:
    """The engine `llm.backend` means: itself, or for `auto` llamacpp where it runs the model as it is.

    auto: llamacpp for a GGUF model (a GGUF preset or a .gguf path) on the CPU when llama-cpp-python is
    installed; transformers on CUDA and for Hugging Face folders. A GGUF that falls back to transformers
    because llama-cpp-python is missing says so once per process.
    """
    if config.backend != "auto":
        return config.backend
    from models.device import resolve_device
    from models.gguf import is_gguf_model

    if not is_gguf_model(config.model) or resolve_device(config.device, "llm.device") != "cpu":
        return "transformers"
    if importlib.util.find_spec("llama_cpp") is None:
        if config.model not in _fallback_said:
            _fallback_said.add(config.model)
            log.warning(
                "ragtune: llm.backend=auto runs %s on transformers (dequantised once): llama-cpp-python is not "
                "installed; pip install 'ragtune[llamacpp]' runs the GGUF as it is",
                config.model,
            )
        return "transformers"
    return "llamacpp"


def load_language_model(config: LLMConfig, progress: bool = True) -> LanguageModel:
    """The engine named by `llm.backend` (auto resolved), with `llm.model` loaded."""
    backend = resolve_backend(config)
    target = GENERATOR_BACKENDS.get(backend)
    if target is None:
        raise ConfigError(f"llm.backend: should be auto or one of {', '.join(GENERATOR_BACKENDS)}, got {backend!r}")
    if config.speculative != "off" and backend != "llamacpp":
        raise ConfigError(
            f"llm.speculative={config.speculative} runs on llm.backend=llamacpp only (this model runs on {backend}); "
            "set llm.speculative=off"
        )
    module, _, cls = target.partition(":")
    lm = getattr(importlib.import_module(module), cls).load(config, progress)
    lm.backend = backend
    return lm


def build_generator(config: LLMConfig, adapter: AdapterRef | None = None, progress: bool = True) -> Generator:
    """One generator for `llm.*`, wrapped with `adapter` when given."""
    lm = load_language_model(config, progress)
    if adapter is None:
        return lm.generator()
    lm.load_adapter(adapter)
    return lm.generator(adapter.name)


@dataclass
class DecodeStream:
    """Streams the text of an engine's decoding steps; the logic every engine shares.

    - A piece that may be the start of a stop string is held back until the next step decides it.
    - A stop string ends the answer (cut before it) and cancels decoding: the engine's step iterator is
      closed, which must stop its work and release its model.
    - A consumer that stops iterating (client gone, Ctrl-C) closes the iterator the same way.
    - `usage` is complete once the stream is exhausted or closed.
    """

    name: str
    steps: Iterator[Step]
    params: SamplingParams
    usage: Usage = field(default_factory=Usage)

    def __iter__(self) -> Iterator[str]:
        started = time.perf_counter()
        stops = self.params.stop
        emitted = text = ""
        tokens = 0
        stopped = False
        try:
            for step in self.steps:
                if self.usage.first_token_s is None:
                    self.usage.first_token_s = time.perf_counter() - started
                text, tokens = step.text, step.tokens
                if text.endswith("\ufffd"):  # half a multi-byte character: wait for the rest
                    continue
                stop_at = find_stop(text, stops)
                if stop_at is not None:
                    text, stopped = text[:stop_at], True
                ready = text if stopped else text[: len(text) - held_back(text, stops)]
                piece, emitted = ready[len(emitted) :], max(ready, emitted, key=len)
                if piece:
                    yield piece
                if stopped:
                    break
            else:  # the engine finished: what was held back is no stop string
                if len(text) > len(emitted) and find_stop(text, stops) is None:
                    yield text[len(emitted) :]
        except ModelError:
            raise
        except Exception as exc:  # an engine's own failure, named once for every engine
            raise ModelError(f"generation failed in {self.name}: {exc}") from exc
        finally:
            _close(self.steps, self.name)
            self.usage.completion_tokens = tokens
            self.usage.total_s = time.perf_counter() - started
            if not stopped and tokens >= self.params.max_new_tokens:
                self.usage.finish_reason = "length"


def _close(steps: Iterator[Step], name: str) -> None:
    close = getattr(steps, "close", None)
    if close is None:
        return
    try:
        close()
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"generation failed in {name}: {exc}") from exc


def check_prompt_length(tokens: int, context_window: int) -> None:
    """Every engine refuses a prompt over llm.context_window the same way, before generating anything."""
    if tokens > context_window:
        raise ModelError(
            f"the prompt is {tokens} tokens or more, over llm.context_window={context_window}; "
            "lower rag.max_context_tokens or shorten the question"
        )


def check_continuations(continuations: list[str]) -> None:
    """What every engine's continuation_logprobs refuses: nothing to score, or an empty choice."""
    if not continuations or any(not c for c in continuations):
        raise ModelError(f"continuations should be non-empty strings, got {continuations!r}")


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest ending of `text` that is the start (not the whole) of a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


def find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Where the earliest stop string starts in `text`, or None."""
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


def collect(stream: TokenStream) -> str:
    """Run a stream to the end and return its text."""
    return "".join(stream)
