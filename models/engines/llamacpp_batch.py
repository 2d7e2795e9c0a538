"""Concurrent requests on the llama.cpp engine: one worker decodes up to N sequences per llama_decode call.

On a CPU a decode step is bound by reading the weights, so sequences decoded together share that read (what
`llama-server --parallel N` does). The worker owns its own llama.cpp context over the loaded model's weights
(the single-request context, continuation_logprobs and the prompt cache stay as they are) with N sequences of
llm.context_window + llm.max_new_tokens cells each. Newcomers' prompts go in chunks alongside the running
sequences' decode steps; each sequence samples with its own SamplingParams; a LoRA applies to the whole
context, so the worker serves one adapter group at a time, in arrival order. Text, stop strings and
cancellation are DecodeStream's, as on every engine: a consumer that closes its stream frees its sequence.
"""

from __future__ import annotations

import ctypes
import queue
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.engines.llamacpp import LlamaCppGenerator, LlamaCppLM, _text, import_llama_cpp
from models.errors import ModelError
from models.generate import DecodeStream, SamplingParams, Step

BATCH_TOKENS = 512  # tokens per llama_decode call (llama.cpp's n_batch default)
PREFILL_CHUNK = 128  # prompt tokens per call while other sequences decode: a long prompt delays them a little each
_TOKEN, _EOG, _END, _ERROR = "token", "eog", "end", "error"


@dataclass(eq=False)
class _Request:
    prompt: list[int]
    params: SamplingParams
    adapter: str | None
    out: queue.Queue = field(default_factory=queue.Queue)  # (kind, value) to the consumer
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass(eq=False)
class _Sequence:
    request: _Request
    seq: int  # llama.cpp sequence id
    limit: int  # tokens this answer may have
    rng: np.random.Generator
    fed: int = 0  # prompt tokens in the KV cache
    last: int | None = None  # the sampled token not yet in the KV cache
    made: int = 0  # answer tokens sampled


class BatchDecoder:
    """A worker thread decoding up to `parallel` requests of `lm` together; `steps` is thread-safe."""

    def __init__(self, lm: LlamaCppLM, parallel: int) -> None:
        llama_cpp = import_llama_cpp()
        self.lm, self.parallel = lm, parallel
        self.seq_tokens = lm.llama.n_ctx()  # per sequence: llm.context_window + llm.max_new_tokens
        params = llama_cpp.llama_context_params.from_buffer_copy(lm.llama.context_params)
        params.n_ctx = self.seq_tokens * parallel
        params.n_seq_max = parallel
        params.n_batch = params.n_ubatch = BATCH_TOKENS
        params.kv_unified = False  # each sequence its own cells: attention reads only its own
        self.ctx = llama_cpp.llama_init_from_model(lm.llama.model, params)
        if not self.ctx:
            raise ModelError(
                f"llama.cpp could not make a context for serve.parallel={parallel} sequences of {self.seq_tokens} "
                f"tokens over {lm.name}; lower serve.parallel or llm.context_window"
            )
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(BATCH_TOKENS, 0, 1)
        self.n_vocab = lm.llama.n_vocab()
        vocab = llama_cpp.llama_model_get_vocab(lm.llama.model)
        self._eog = lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))
        self._incoming: queue.Queue[_Request | None] = queue.Queue()  # None: close
        self._adapter: str | None = None
        self._thread = threading.Thread(target=self._run, name="llamacpp-batch", daemon=True)
        self._thread.start()

    def kv_bytes_per_sequence(self) -> int:
        """Bytes of KV cache one sequence holds (keys and values of every layer for its cells)."""
        llama_cpp = import_llama_cpp()
        model = self.lm.llama.model
        layers, heads = llama_cpp.llama_model_n_layer(model), llama_cpp.llama_model_n_head(model)
        kv_width = llama_cpp.llama_model_n_embd(model) // heads * llama_cpp.llama_model_n_head_kv(model)
        return 2 * layers * kv_width * 2 * self.seq_tokens  # keys and values, f16

    def steps(self, prompt: list[int], params: SamplingParams, adapter: str | None) -> Iterator[Step]:
        """The answer's steps as the worker decodes them; closing this iterator frees the sequence."""
        request = _Request(prompt, params, adapter)
        self._incoming.put(request)
        ids: list[int] = []
        try:
            while True:
                kind, value = request.out.get()
                if kind == _TOKEN:
                    ids.append(value)
                    yield Step(_text(self.lm.llama, ids), len(ids))
                elif kind == _EOG:
                    yield Step(_text(self.lm.llama, ids), len(ids))
                elif kind == _ERROR:
                    raise value
                else:
                    return
        finally:
            request.cancelled.set()

    def close(self) -> None:
        """Stop the worker once the requests already sent have ended, and free its context."""
        self._incoming.put(None)
        self._thread.join()

    # -- the worker ---------------------------------------------------------------------------------
    def _run(self) -> None:
        llama_cpp = import_llama_cpp()
        waiting: deque[_Request] = deque()
        active: dict[int, _Sequence] = {}
        closing = False
        while not closing or active or waiting:
            if not active and not waiting:
                waiting.append(self._incoming.get())  # idle: block until a request comes
            while True:
                try:
                    waiting.append(self._incoming.get_nowait())
                except queue.Empty:
                    break
            if None in waiting:
                closing = True
                waiting = deque(r for r in waiting if r is not None)
            for sequence in [s for s in active.values() if s.request.cancelled.is_set()]:
                self._finish(active, sequence)
            self._admit(waiting, active)
            if active:
                try:
                    self._step(active)
                except Exception as exc:  # a failed decode ends every sequence in it; the worker goes on
                    error = exc if isinstance(exc, ModelError) else ModelError(f"batched decoding failed: {exc}")
                    for sequence in list(active.values()):
                        sequence.request.out.put((_ERROR, error))
                        self._finish(active, sequence)
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)

    def _admit(self, waiting: deque[_Request], active: dict[int, _Sequence]) -> None:
        """Newcomers in arrival order, while the first one waiting is for the adapter being served."""
        while waiting and len(active) < self.parallel:
            request = waiting[0]
            if request.cancelled.is_set():
                waiting.popleft()
                continue
            if request.adapter != self._adapter:
                if active:  # its turn comes when this adapter's sequences have ended
                    return
                try:
                    self._select(request.adapter)
                except ModelError as exc:
                    waiting.popleft().out.put((_ERROR, exc))
                    continue
            waiting.popleft()
            seq = min(set(range(self.parallel)) - set(active))
            limit = min(request.params.max_new_tokens, self.seq_tokens - len(request.prompt))
            if limit <= 0 or not request.prompt:
                request.out.put((_END, None))
                continue
            active[seq] = _Sequence(request, seq, limit, np.random.default_rng(request.params.seed))

    def _select(self, adapter: str | None) -> None:
        llama_cpp = import_llama_cpp()
        llama_cpp.llama_memory_clear(self.memory, False)  # every sequence has ended: no cells to keep
        if adapter is None:
            status = llama_cpp.llama_set_adapters_lora(self.ctx, None, 0, None)
        else:
            handles = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self.lm._adapters[adapter])
            status = llama_cpp.llama_set_adapters_lora(self.ctx, handles, 1, (ctypes.c_float * 1)(1.0))
        if status != 0:
            raise ModelError(f"llama.cpp could not apply adapter {adapter!r} to {self.lm.name} (status {status})")
        self._adapter = adapter

    def _step(self, active: dict[int, _Sequence]) -> None:
        """One llama_decode: the next token of every decoding sequence, then prompt chunks of newcomers."""
        llama_cpp, batch = import_llama_cpp(), self.batch
        rows: list[tuple[int, _Sequence]] = []  # batch row whose logits sample the sequence's next token
        n = 0

        def put(token: int, pos: int, seq: int, logits: bool) -> None:
            nonlocal n
            batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, pos, 1
            batch.seq_id[n][0], batch.logits[n] = seq, logits
            n += 1

        decoding = [s for s in active.values() if s.last is not None]
        for s in decoding:
            rows.append((n, s))
            put(s.last, len(s.request.prompt) + s.made - 1, s.seq, True)
        budget = (PREFILL_CHUNK if decoding else BATCH_TOKENS) - n
        for s in active.values():
            if s.last is not None or budget <= 0:
                continue
            take = min(budget, len(s.request.prompt) - s.fed)
            for i in range(s.fed, s.fed + take):
                put(s.request.prompt[i], i, s.seq, i == len(s.request.prompt) - 1)
            s.fed += take
            budget -= take
            if s.fed == len(s.request.prompt):
                rows.append((n - 1, s))
        batch.n_tokens = n
        status = llama_cpp.llama_decode(self.ctx, batch)
        if status != 0:
            raise ModelError(f"llama_decode returned {status} for {n} tokens of {len(active)} sequences")
        for row, s in rows:
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, row), shape=(self.n_vocab,))
            token = sample(logits, s.request.params, s.rng)
            if self._eog(token):
                s.request.out.put((_EOG, None))
                self._finish(active, s)
                continue
            s.made += 1
            s.last = token
            s.request.out.put((_TOKEN, token))
            if s.made >= s.limit:
                self._finish(active, s)

    def _finish(self, active: dict[int, _Sequence], sequence: _Sequence) -> None:
        """End a sequence: its consumer told, its KV cells freed for the next newcomer."""
        sequence.request.out.put((_END, None))
        import_llama_cpp().llama_memory_seq_rm(self.memory, sequence.seq, -1, -1)
        del active[sequence.seq]


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """Greedy at temperature 0; else temperature, then nucleus (top-p) sampling, drawn from `rng`."""
    if params.temperature <= 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / params.temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if params.top_p < 1.0:
        order = np.argsort(-probs)
        keep = int(np.searchsorted(np.cumsum(probs[order]), params.top_p)) + 1  # the smallest set reaching top_p
        kept = order[:keep]
        return int(rng.choice(kept, p=probs[kept] / probs[kept].sum()))
    return int(rng.choice(len(probs), p=probs))


class BatchedGenerator:
    """A llama.cpp generator whose `stream` goes through the batch decoder; everything else is the generator's."""

    def __init__(self, generator: LlamaCppGenerator, decoder: BatchDecoder) -> None:
        self.generator, self.decoder = generator, decoder
        self.name = generator.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self.generator, name)  # count_tokens, encode_chat, continuation_logprobs

    def stream(self, messages: list[dict[str, str]], params: SamplingParams) -> DecodeStream:
        ids = self.generator.encode_chat(messages)
        stream = DecodeStream(self.name, self.decoder.steps(ids, params, self.generator.adapter), params)
        stream.usage.prompt_tokens = len(ids)
        return stream
