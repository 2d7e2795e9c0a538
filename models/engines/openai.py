"""The remote engine: a model served by an OpenAI-compatible server (vLLM, llama.cpp's server, ragtune serve).

Answers stream from `POST /v1/chat/completions` (server-sent events) through the shared DecodeStream, so
stop strings, usage, timings and cancellation (closing the stream closes the HTTP response, which ends
the server's generation) behave as with a local engine. An adapter is a model the server already serves
(vLLM: `--lora-modules NAME=DIR`); loading one only checks that the server lists it.

Token counts, best source first: the server's `/tokenize` (vLLM), else the tokenizer of a local copy of
the base (llm.model a local folder or an already prepared preset), else an estimate of 4 characters per
token (then the server alone judges whether a prompt fits its context).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from models.chat_text import encode_chat_text, hf_markup_ids, hf_text_ids
from models.config import LLMConfig
from models.engines.openai_http import RemoteServer
from models.errors import AdapterError, ModelError, RemoteModelError
from models.generate import (
    AdapterRef,
    DecodeStream,
    SamplingParams,
    Step,
    Usage,
    check_continuations,
    check_prompt_length,
)
from models.paths import cache_home
from models.presets import get_preset

MAX_STOPS = 4  # what OpenAI-compatible servers accept; more stop strings are applied here only
CHARS_PER_TOKEN = 4  # the estimate when neither the server nor a local tokenizer can count


class OpenAILM:
    """A model on a remote server and the adapters it serves (`LanguageModel` for llm.backend=openai)."""

    dtype = "remote"

    def __init__(self, config: LLMConfig, server: RemoteServer, served: list[str]) -> None:
        self.config, self.server = config, server
        self.name = config.model
        self.served_model = config.served_model or config.model
        self.path = local_base(config.model)  # adapters are checked against this local copy of the base
        self.device = server.label
        self.counter = TokenCounter(server, self.served_model, self.path)
        self._served = served
        self._adapters: dict[str, str] = {}  # adapter name -> its model name on the server

    @classmethod
    def load(cls, config: LLMConfig, progress: bool = True) -> OpenAILM:
        """Connect and check that the server serves llm.served_model; a server that is down fails here."""
        server = RemoteServer(config)
        try:
            served = served_models(server)
            model = config.served_model or config.model
            if model not in served:
                raise ModelError(
                    f"{server.label} does not serve {model!r} (it serves: {', '.join(served) or 'nothing'}); "
                    "set llm.served_model to one of them"
                )
            return cls(config, server, served)
        except BaseException:  # a refused model must not leave its connection pool open
            server.close()
            raise

    def close(self) -> None:
        """Close the HTTP client shared by this model's generators; they cannot be used afterwards."""
        self.server.close()

    def has_adapter(self, name: str) -> bool:
        return name in self._adapters

    def load_adapter(self, adapter: AdapterRef) -> None:
        """Map the adapter to the server's model of that name (a ragtune server calls it finetune:NAME)."""
        if adapter.name in self._adapters:
            return
        self._served = served_models(self.server)  # adapters may have been added since connecting
        for served in (adapter.name, f"finetune:{adapter.name}"):
            if served in self._served:
                self._adapters[adapter.name] = served
                return
        raise AdapterError(  # the server's setup, not the request: `ragtune serve` in front answers 503
            f"served model lacks LoRA {adapter.name}; start the server with --lora-modules {adapter.name}=DIR "
            f"(`ragtune adapters export {adapter.name} --for vllm -o DIR` writes DIR); {self.server.label} serves: "
            f"{', '.join(self._served)}"
        )

    def generator(self, adapter: str | None = None) -> OpenAIGenerator:
        if adapter is not None and adapter not in self._adapters:
            raise ModelError(f"adapter {adapter!r} is not loaded into {self.name}; load_adapter() it first")
        model = self._adapters[adapter] if adapter else self.served_model
        name = self.name + (f"+{adapter}" if adapter else "")
        return OpenAIGenerator(self.server, model, name, self.config, self.counter)


class OpenAIGenerator:
    """Requests for one served model; any number may run at once (the server schedules them)."""

    def __init__(self, server: RemoteServer, model: str, name: str, config: LLMConfig, counter: TokenCounter) -> None:
        self.server, self.model, self.name = server, model, name
        self.context_window, self.counter = config.context_window, counter

    def count_tokens(self, text: str) -> int:
        return self.counter.count(text)

    def stream(self, messages: list[dict[str, str]], params: SamplingParams) -> DecodeStream:
        prompt = self.counter.count_chat(messages)
        if prompt is not None:  # None: no tokenizer here, the server checks the length itself
            check_prompt_length(prompt, self.context_window)
        usage = Usage(prompt_tokens=prompt or 0)
        return DecodeStream(self.name, self._steps(messages, params, usage), params, usage)

    def _steps(self, messages: list[dict[str, str]], params: SamplingParams, usage: Usage) -> Iterator[Step]:
        """One Step per streamed piece; the server's usage, when it sends it, gives the exact token counts."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.stop and len(params.stop) <= MAX_STOPS:  # the server stops at once; DecodeStream cuts anyway
            body["stop"] = list(params.stop)
        text, pieces, counted = "", 0, None
        for event in self.server.events("/chat/completions", body):
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content") or ""
                if piece:
                    text, pieces = text + piece, pieces + 1
                    yield Step(text, pieces)
            if isinstance(event.get("usage"), dict):
                usage.prompt_tokens = int(event["usage"].get("prompt_tokens") or usage.prompt_tokens)
                counted = int(event["usage"].get("completion_tokens") or 0)
        if counted is not None and counted != pieces:  # a piece may hold several tokens
            yield Step(text, counted)

    def continuation_logprobs(self, messages: list[dict[str, str]], continuations: list[str]) -> list[float]:
        """Summed log-probabilities from `POST /v1/completions` with echo and logprobs (vLLM serves it)."""
        check_continuations(continuations)
        prompt = self.counter.chat_text(messages)
        if prompt is None:
            raise ModelError(
                "continuation_logprobs with llm.backend=openai needs the chat template: set llm.model to a local "
                "copy of the served base (a folder or a prepared preset)"
            )
        return [self._logprob(prompt, continuation) for continuation in continuations]

    def _logprob(self, prompt: str, continuation: str) -> float:
        body = {"model": self.model, "prompt": prompt + continuation, "max_tokens": 1, "echo": True, "logprobs": 1}
        try:
            logprobs = self.server.post("/completions", body)["choices"][0]["logprobs"]
            pairs = zip(logprobs["text_offset"], logprobs["token_logprobs"])
        except RemoteModelError:
            raise
        except ModelError as exc:
            raise ModelError(
                f"the remote server does not expose log-probabilities (/v1/completions with echo and logprobs): {exc}"
            ) from None
        except (KeyError, IndexError, TypeError):
            raise ModelError(
                f"the remote server at {self.server.label} does not expose log-probabilities "
                "(/v1/completions with echo and logprobs answered without them)"
            ) from None
        # echo returns the prompt's tokens then the one generated token: score the tokens that start at or after
        # the continuation (a token spanning the boundary, rare after a chat template's newline, is left out).
        scored = [lp for offset, lp in list(pairs)[:-1] if offset >= len(prompt) and lp is not None]
        return float(sum(scored))


class TokenCounter:
    """Counts tokens with the server's /tokenize, else a local tokenizer of the base, else an estimate."""

    def __init__(self, server: RemoteServer, model: str, base: Path) -> None:
        self.server, self.model, self.base = server, model, base
        self._endpoint: bool | None = None  # unknown until first asked
        self._tokenizer: Any = None

    def count(self, text: str) -> int:
        counted = self._remote({"prompt": text, "add_special_tokens": False})
        if counted is not None:
            return counted
        tokenizer = self._local()
        if tokenizer is not None:
            return len(hf_text_ids(tokenizer, text))
        return math.ceil(len(text) / CHARS_PER_TOKEN)

    def count_chat(self, messages: list[dict[str, str]]) -> int | None:
        """The chat prompt's exact length, or None when only an estimate is possible."""
        counted = self._remote({"messages": messages, "add_generation_prompt": True})
        if counted is not None:
            return counted
        tokenizer = self._local()
        if tokenizer is None:
            return None

        def render(turns: list[dict[str, str]]) -> str:
            return tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)

        # As a local engine would count it: the template's markers as control tokens, the contents as text.
        ids = encode_chat_text(render, messages, partial(hf_markup_ids, tokenizer), partial(hf_text_ids, tokenizer))
        return len(ids)

    def chat_text(self, messages: list[dict[str, str]]) -> str | None:
        tokenizer = self._local()
        if tokenizer is None:
            return None
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _remote(self, body: dict[str, Any]) -> int | None:
        if self._endpoint is False:
            return None
        try:
            answer = self.server.post("/tokenize", {"model": self.model, **body})
        except RemoteModelError:  # down or failing: not a sign that the endpoint is missing
            raise
        except ModelError:
            if self._endpoint:  # it worked before: this is a real failure
                raise
            self._endpoint = False  # no such endpoint (404) or another shape: count here instead
            return None
        self._endpoint = True
        return int(answer["count"]) if "count" in answer else len(answer.get("tokens") or [])

    def _local(self) -> Any:
        if self._tokenizer is None and (self.base / "tokenizer_config.json").is_file():
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.base, local_files_only=True, trust_remote_code=False)
        return self._tokenizer


def served_models(server: RemoteServer) -> list[str]:
    """The model ids `GET /v1/models` lists."""
    listing = server.get("/models").get("data")
    return [str(m.get("id")) for m in listing if isinstance(m, dict)] if isinstance(listing, list) else []


def local_base(model: str) -> Path:
    """A local copy of the base when there is one (a folder, or a preset already prepared), else the name as a path."""
    preset = get_preset(model, "lm")
    if preset is not None:
        return cache_home() / "models" / preset.name
    return Path(model).expanduser()
