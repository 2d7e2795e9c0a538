"""The llama.cpp engine: a GGUF memory-mapped as it is (no dequantised copy) and decoded by llama-cpp-python.

GGUF LoRA adapters load once each over the one base and stay resident; a request selects its adapter (or
none) while it holds the lock it decodes under. llama.cpp keeps the previous prompt in its KV cache, so a
prompt that starts like the last one (a RAG prompt's fixed instructions) only evaluates what differs;
switching adapters clears that cache, whose values were computed with other weights.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from models.chat_text import encode_chat_text
from models.config import LLMConfig
from models.errors import AdapterError, ModelError
from models.generate import AdapterRef, DecodeStream, SamplingParams, Step, check_continuations, check_prompt_length
from models.gguf import gguf_file
from models.gguf.lora import GGUF_LORA_FILE, check_lora_gguf
from models.presets import PRESETS

_INSTALL = "pip install 'ragtune[llamacpp]' (llama-cpp-python==0.3.36; the first install compiles llama.cpp)"
PROMPT_LOOKUP_TOKENS = 10  # draft tokens proposed per step by prompt lookup (llama-cpp-python's default)


# ggml's log levels (ggml.h: DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 continues the previous message).
_GGML_LOG_ERROR, _GGML_LOG_CONT = 4, 5
_log_state = {"callback": None, "printing": False}


def import_llama_cpp() -> Any:
    """The llama_cpp package, or a ModelError with the install command; llama.cpp's log reduced to its errors."""
    try:
        import llama_cpp
    except ImportError:
        raise ModelError(f"llm.backend=llamacpp needs llama-cpp-python: {_INSTALL}") from None
    if _log_state["callback"] is None:
        # llama-cpp-python 0.3.36 reads the levels by an older numbering in which 3 was ERROR, so with
        # verbose=False llama.cpp's warnings still reached stderr: a LoRA on the MLP printed a line per
        # repacked weight ("cannot use buft 'CPU_REPACK', fallback to CPU"; the adapter applies all the same).
        _log_state["callback"] = llama_cpp.llama_log_callback(_print_errors)  # kept: llama.cpp holds the pointer
        llama_cpp.llama_log_set(_log_state["callback"], ctypes.c_void_p(0))
    return llama_cpp


def _print_errors(level: int, text: bytes, user_data: Any) -> None:
    """llama.cpp's log callback: errors (and their continuation lines) to stderr, the rest dropped."""
    if level != _GGML_LOG_CONT:
        _log_state["printing"] = level == _GGML_LOG_ERROR
    if _log_state["printing"]:
        print(text.decode("utf-8", errors="replace"), end="", file=sys.stderr, flush=True)


class LlamaCppLM:
    """A loaded GGUF base and the GGUF LoRA adapters loaded over it (`LanguageModel` for llm.backend=llamacpp)."""

    def __init__(self, llama: Any, name: str, path: Path, context_window: int) -> None:
        self.llama = llama
        self.name, self.path = name, path
        self.dtype, self.device = "gguf", "cpu"
        self.context_window = context_window
        preset = PRESETS.get(name)
        # The base's sha256 where it is pinned (a preset, verified when prepared); else the checker hashes it once.
        self.sha256 = preset.sha256 if preset is not None and preset.kind == "gguf" else None
        self.lock = threading.Lock()  # held while decoding or while the adapter set changes
        self._adapters: dict[str, Any] = {}  # name -> llama_adapter_lora pointer (freed with the model)
        self._active: str | None = None
        self.template = chat_template(llama, name)

    @classmethod
    def load(cls, config: LLMConfig, progress: bool = True) -> LlamaCppLM:
        llama_cpp = import_llama_cpp()
        path = gguf_file(config.model)
        threads = config.threads or len(os.sched_getaffinity(0))
        draft = None
        if config.speculative == "prompt_lookup":
            from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

            draft = LlamaPromptLookupDecoding(num_pred_tokens=PROMPT_LOOKUP_TOKENS)
        try:
            llama = llama_cpp.Llama(
                model_path=str(path),
                # Room for the longest accepted prompt plus an answer of llm.max_new_tokens.
                n_ctx=config.context_window + config.max_new_tokens,
                n_threads=threads,
                n_threads_batch=threads,
                # llama.cpp's own default on the CPU (llama-cpp-python's is off): prompts evaluate faster here, in
                # every run of BENCHMARKS.md's "llama.cpp settings" (scripts/bench_rag.py --weights).
                flash_attn=True,
                seed=config.seed,
                draft_model=draft,
                # Drafts are verified against logits of every position; llama-cpp-python 0.3.36 sizes its logits
                # buffer from this flag alone (not from draft_model), so it must be set with a draft model.
                logits_all=draft is not None,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"llm.model={config.model!r}: llama.cpp cannot load {path}: {exc}") from None
        return cls(llama, config.model, path, config.context_window)

    def has_adapter(self, name: str) -> bool:
        return name in self._adapters

    def load_adapter(self, adapter: AdapterRef) -> None:
        llama_cpp = import_llama_cpp()
        if self.has_adapter(adapter.name):
            return
        file = adapter.path / GGUF_LORA_FILE
        if not file.is_file():
            raise AdapterError(
                f"adapter {adapter.name!r}: {file} is missing; llm.backend=llamacpp runs GGUF LoRA adapters "
                "(export the adapter to GGUF, or use llm.backend=transformers)"
            )
        check_lora_gguf(file, self.path, self.sha256)  # a whole GGUF; architecture, base hash and shapes, named
        with self.lock:  # no request decodes while the adapter set changes
            if self.has_adapter(adapter.name):  # loaded meanwhile by a concurrent first use: keep that handle
                return
            handle = llama_cpp.llama_adapter_lora_init(self.llama.model, str(file).encode())
            if not handle:
                raise AdapterError(f"adapter {adapter.name!r}: llama.cpp cannot load {file} over {self.path}")
            self._adapters[adapter.name] = handle

    def generator(self, adapter: str | None = None) -> LlamaCppGenerator:
        if adapter is not None and not self.has_adapter(adapter):
            raise ModelError(f"adapter {adapter!r} is not loaded into {self.name}; load_adapter() it first")
        return LlamaCppGenerator(self, adapter)

    def select(self, adapter: str | None) -> None:
        """Make `adapter` (None: the base alone) the one applied; call with the lock held."""
        if adapter == self._active:
            return
        llama_cpp = import_llama_cpp()
        if adapter is None:
            status = llama_cpp.llama_set_adapters_lora(self.llama.ctx, None, 0, None)
        else:
            handles = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._adapters[adapter])
            scales = (ctypes.c_float * 1)(1.0)
            status = llama_cpp.llama_set_adapters_lora(self.llama.ctx, handles, 1, scales)
        if status != 0:
            raise ModelError(f"llama.cpp could not apply adapter {adapter!r} to {self.name} (status {status})")
        self.llama.reset()  # the cached prompt was computed with the previous weights
        self._active = adapter


class LlamaCppGenerator:
    """One request at a time on the shared llama.cpp context, with its adapter selected."""

    def __init__(self, lm: LlamaCppLM, adapter: str | None) -> None:
        self.lm, self.adapter = lm, adapter
        self.name = lm.name + (f"+{adapter}" if adapter else "")

    def count_tokens(self, text: str) -> int:
        return len(self._text_ids(text))

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """The chat prompt's tokens by the template in the GGUF: its markers as control tokens (as transformers
        parses them), every message content as text."""
        ids = encode_chat_text(self._render, messages, self._markup_ids, self._text_ids, self.lm.context_window)
        check_prompt_length(len(ids), self.lm.context_window)
        return ids

    def _render(self, messages: list[dict[str, str]]) -> str:
        return self.lm.template(messages=messages).prompt

    def _markup_ids(self, text: str) -> list[int]:
        return self.lm.llama.tokenize(text.encode(), add_bos=False, special=True)

    def _text_ids(self, text: str) -> list[int]:
        return self.lm.llama.tokenize(text.encode(), add_bos=False, special=False)

    def stream(self, messages: list[dict[str, str]], params: SamplingParams) -> DecodeStream:
        ids = self.encode_chat(messages)
        stream = DecodeStream(self.name, self._steps(ids, params), params)
        stream.usage.prompt_tokens = len(ids)
        return stream

    def _steps(self, prompt: list[int], params: SamplingParams) -> Iterator[Step]:
        """Decode on the caller's thread; closing this generator stops decoding and frees the context."""
        llama_cpp, llama = import_llama_cpp(), self.lm.llama
        vocab = llama_cpp.llama_model_get_vocab(llama.model)
        limit = min(params.max_new_tokens, llama.n_ctx() - len(prompt))
        with self.lm.lock:
            self.lm.select(self.adapter)
            llama.set_seed(params.seed)
            # top_k=0, min_p=0 and no repeat penalty: plain temperature + nucleus sampling, as transformers does.
            tokens = llama.generate(
                prompt, temp=params.temperature, top_p=params.top_p, top_k=0, min_p=0.0, repeat_penalty=1.0
            )
            ids: list[int] = []
            try:
                for token in tokens:
                    if llama_cpp.llama_vocab_is_eog(vocab, token):
                        yield Step(_text(llama, ids), len(ids))
                        return
                    ids.append(token)
                    yield Step(_text(llama, ids), len(ids))
                    if len(ids) >= limit:
                        return
            finally:
                tokens.close()

    def continuation_logprobs(self, messages: list[dict[str, str]], continuations: list[str]) -> list[float]:
        """Sum of each continuation's token log-probabilities after the chat prompt (the assistant's turn)."""
        check_continuations(continuations)
        prompt = self.encode_chat(messages)
        llama = self.lm.llama
        scores = []
        with self.lm.lock:
            self.lm.select(self.adapter)
            for continuation in continuations:
                ids = llama.tokenize(continuation.encode(), add_bos=False, special=False)
                if not ids:
                    raise ModelError(f"continuation {continuation!r} has no tokens to score")
                scores.append(self._score(prompt, ids))
        return scores

    def _score(self, prompt: list[int], ids: list[int]) -> float:
        """log P(ids | prompt): the prompt's cached prefix is kept; the rest and the continuation go in batches."""
        llama = self.lm.llama
        full = prompt + ids
        first = len(prompt) - 1  # the position whose logits predict the continuation's first token
        start = min(common_prefix(llama.eval_tokens, prompt), first)  # re-evaluate at least that position
        return _logprob_sum(llama, full, start, first)


def _logprob_sum(llama: Any, full: list[int], start: int, first: int) -> float:
    """Evaluate full[start:-1] in llama.cpp batches; return the sum of log P(full[p + 1]) for positions p >= first.

    Logits are kept only for the positions that score a token: one batched pass over the continuation instead
    of a decode step per token, without llama-cpp-python's logits_all buffer (a vocabulary row per prompt token).
    """
    llama_cpp = import_llama_cpp()
    batch, n_vocab, end = llama._batch.batch, llama.n_vocab(), len(full) - 1
    llama._ctx.kv_cache_seq_rm(-1, start, -1)
    total = 0.0
    for chunk in range(start, end, llama.n_batch):
        span = full[chunk : min(end, chunk + llama.n_batch)]
        batch.n_tokens = len(span)
        for i, token in enumerate(span):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, chunk + i, 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = chunk + i >= first
        batch.logits[len(span) - 1] = True  # llama.cpp returns at least the last position's logits
        llama._ctx.decode(llama._batch)
        llama.input_ids[chunk : chunk + len(span)] = span  # llama-cpp-python's record of the KV cache
        llama.n_tokens = chunk + len(span)
        for i in range(max(0, first - chunk), len(span)):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llama.ctx, i), shape=(n_vocab,))
            total += float(logits[full[chunk + i + 1]] - _logsumexp(logits))
    return total


def _text(llama: Any, ids: list[int]) -> str:
    # The whole answer decoded again each step: a token that ends half a UTF-8 character shows as \ufffd,
    # which DecodeStream holds back until the next token completes it.
    return llama.detokenize(ids).decode("utf-8", errors="replace")


def common_prefix(cached: Any, prompt: list[int]) -> int:
    """How many tokens `prompt` shares with the start of `cached` (what llama.cpp's KV cache holds)."""
    count = 0
    for a, b in zip(cached, prompt):
        if a != b:
            break
        count += 1
    return count


def _logsumexp(logits: np.ndarray) -> float:
    top = float(logits.max())
    return top + math.log(float(np.exp(logits.astype(np.float64) - top).sum()))


def chat_template(llama: Any, name: str) -> Any:
    """The GGUF's own chat template (tokenizer.chat_template) of a loaded `llama`, rendered as transformers renders
    it; called with `messages=[...]`, its `.prompt` is the text to tokenize. `name` only names the model in errors."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        raise ModelError(f"llm.model={name!r}: the GGUF has no tokenizer.chat_template; give an instruct model")
    model = llama._model

    def token(key: str) -> str:
        value = llama.metadata.get(key)
        return model.token_get_text(int(value)) if value is not None else ""

    return Jinja2ChatFormatter(
        template, token("tokenizer.ggml.eos_token_id"), token("tokenizer.ggml.bos_token_id"), add_generation_prompt=True
    )


# What the benchmarks hold the engine against: llama-cpp-python's own objects, set up as the engine sets them up.


def reference_llama(path: Path, n_ctx: int = 512, threads: int | None = None, **settings: Any) -> Any:
    """llama-cpp-python's own `Llama` over the GGUF at `path`, as `LlamaCppLM.load` configures it (`threads` for
    prompt and decode, flash attention on, quiet), with `settings` (any other `Llama` argument: n_batch, n_ubatch,
    flash_attn, logits_all, vocab_only, ...) on top: the bare llama.cpp the engine is measured against.

    `threads=None` leaves llama-cpp-python's own thread default.
    """
    llama_cpp = import_llama_cpp()
    engine: dict[str, Any] = {"flash_attn": True, "verbose": False}
    if threads is not None:
        engine |= {"n_threads": threads, "n_threads_batch": threads}
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, **(engine | settings))


def end_of_generation(llama: Any) -> Callable[[int], bool]:
    """Whether a token of `llama` ends an answer (end of turn or of text, by its vocabulary), as the engine stops."""
    llama_cpp = import_llama_cpp()
    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    return lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))


def quantize(source: Path, target: Path, kind: str, threads: int) -> None:
    """llama.cpp's own quantiser: the GGUF `source` written to `target` with weights of type `kind` (e.g. Q8_0,
    IQ4_NL, BF16; no importance matrix is given, so the IQ2 and IQ3 types are out of reach)."""
    llama_cpp = import_llama_cpp()
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind}", None)
    if ftype is None:
        raise ModelError(f"weight type {kind!r}: llama.cpp has no LLAMA_FTYPE_MOSTLY_{kind}; give one like Q8_0")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize, params.nthread = True, threads
    if llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params) != 0:
        raise ModelError(f"llama.cpp could not re-quantise {source} to {kind}")
