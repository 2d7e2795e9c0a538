"""The transformers engine: a Hugging Face causal LM run with `model.generate` on a worker thread.

Adapters load into one PeftModel over the shared base weights; generators of the base and of each
adapter share one lock, so one request generates at a time and selects its adapter while it holds it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from models.chat_text import encode_chat_text, hf_markup_ids, hf_text_ids
from models.config import LLMConfig
from models.errors import ModelError
from models.generate import AdapterRef, DecodeStream, SamplingParams, Step, check_continuations, check_prompt_length
from models.loading import LoadedLM, load_lm, pad_token_id


class TransformersLM:
    """A loaded base model and the adapters loaded into it (`LanguageModel` for llm.backend=transformers)."""

    def __init__(self, loaded: LoadedLM, context_window: int) -> None:
        self.loaded = loaded
        self.name, self.path = loaded.name, loaded.path
        self.dtype, self.device = str(loaded.dtype).removeprefix("torch."), loaded.device
        self.context_window = context_window
        self.lock = threading.Lock()  # held while generating or while the weights change
        self._peft: Any = None  # the PeftModel, once an adapter has been loaded

    @classmethod
    def load(cls, config: LLMConfig, progress: bool = True) -> TransformersLM:
        return cls(load_lm(config, progress), config.context_window)

    def has_adapter(self, name: str) -> bool:
        return self._peft is not None and name in self._peft.peft_config

    def load_adapter(self, adapter: AdapterRef) -> None:
        from peft import PeftModel

        if self.has_adapter(adapter.name):
            return
        with self.lock:  # no request generates while the weights change
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(
                    self.loaded.model, str(adapter.path), adapter_name=adapter.name, is_trainable=False
                )
            elif adapter.name not in self._peft.peft_config:
                self._peft.load_adapter(str(adapter.path), adapter_name=adapter.name, is_trainable=False)
            self._peft.eval()

    def generator(self, adapter: str | None = None) -> TransformersGenerator:
        if adapter is not None and not self.has_adapter(adapter):
            raise ModelError(f"adapter {adapter!r} is not loaded into {self.name}; load_adapter() it first")
        model = self._peft if self._peft is not None else self.loaded.model
        name = self.name + (f"+{adapter}" if adapter else "")
        return TransformersGenerator(
            model, self.loaded.tokenizer, name, self.context_window, self.lock, self._activation(adapter)
        )

    def _activation(self, adapter: str | None) -> Callable[[], AbstractContextManager[Any]]:
        def activate() -> AbstractContextManager[Any]:
            if self._peft is None:
                return nullcontext()
            if adapter is None:
                return self._peft.disable_adapter()
            self._peft.set_adapter(adapter)
            return nullcontext()

        return activate


class TransformersGenerator:
    """One request at a time on a (possibly adapted) transformers model."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        name: str,
        context_window: int,
        lock: threading.Lock | None = None,
        activate: Callable[[], AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.context_window = context_window
        # One generate at a time: a second would halve both. Generators over one shared model share the
        # lock, and `activate` selects their adapter while it is held.
        self._lock = lock or threading.Lock()
        self._activate = activate or nullcontext

    def count_tokens(self, text: str) -> int:
        return len(self._text_ids(text))

    def encode_chat(self, messages: list[dict[str, str]]) -> torch.Tensor:
        """The chat prompt's tokens: the template's markers as control tokens, every content as text."""
        ids = encode_chat_text(self._render, messages, self._markup_ids, self._text_ids, self.context_window)
        check_prompt_length(len(ids), self.context_window)
        return torch.tensor([ids], dtype=torch.long)

    def _render(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _markup_ids(self, text: str) -> list[int]:
        return hf_markup_ids(self.tokenizer, text)

    def _text_ids(self, text: str) -> list[int]:
        return hf_text_ids(self.tokenizer, text)

    def stream(self, messages: list[dict[str, str]], params: SamplingParams) -> DecodeStream:
        input_ids = self.encode_chat(messages)
        stream = DecodeStream(self.name, self._steps(input_ids, params), params)
        stream.usage.prompt_tokens = int(input_ids.shape[1])
        return stream

    def continuation_logprobs(self, messages: list[dict[str, str]], continuations: list[str]) -> list[float]:
        """Total log-probability of each continuation as the start of the reply (no length normalisation).

        One forward pass over the shared prompt; its cache is repeated once per continuation and one more
        batched pass scores the continuations' later tokens (none when every continuation is one token).
        Right padding is harmless here: causal attention never lets a real token see a later pad.
        """
        check_continuations(continuations)
        prompt = self.encode_chat(messages)
        tokens = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
        longest = max(len(t) for t in tokens)
        if prompt.shape[1] + longest > self.context_window:
            raise ModelError(
                f"the prompt and its longest choice are {prompt.shape[1] + longest} tokens, over "
                f"llm.context_window={self.context_window}; lower rag.max_context_tokens or shorten the question"
            )
        pad = pad_token_id(self.tokenizer)
        batch = torch.tensor([t + [pad] * (longest - len(t)) for t in tokens])
        try:
            with self._lock, self._activate(), torch.inference_mode():
                scores = self._score(prompt, batch)
        except Exception as exc:  # an engine's own failure, named as generation failures are
            raise ModelError(f"scoring choices failed in {self.name}: {exc}") from exc
        return [float(scores[i, : len(t)].sum()) for i, t in enumerate(tokens)]

    def _score(self, prompt: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Log-probability of every token of `batch` (rows: continuations) after `prompt`; shape of batch."""
        device = self.model.device
        first = self.model(input_ids=prompt.to(device), use_cache=True)
        logprobs = torch.log_softmax(first.logits[0, -1].float(), dim=-1)
        batch = batch.to(device)
        out = [logprobs[batch[:, 0]].unsqueeze(1)]
        if batch.shape[1] > 1:
            cache = first.past_key_values
            cache.batch_repeat_interleave(batch.shape[0])
            rest = self.model(input_ids=batch[:, :-1], past_key_values=cache, use_cache=True)
            later = torch.log_softmax(rest.logits.float(), dim=-1)
            out.append(later.gather(2, batch[:, 1:].unsqueeze(2)).squeeze(2))
        return torch.cat(out, dim=1).cpu()

    def _steps(self, input_ids: torch.Tensor, params: SamplingParams) -> Iterator[Step]:
        """Run `generate` on a worker thread; yield a Step per token; closing this stops the worker."""
        cancel = threading.Event()
        streamer = _QueueStreamer()
        errors: list[BaseException] = []
        kwargs = self._generate_kwargs(input_ids, params, streamer, cancel)

        def work() -> None:
            try:
                with self._lock, self._activate(), torch.inference_mode():
                    if cancel.is_set():  # the consumer left while this request waited for the model
                        return
                    if params.temperature > 0:
                        torch.manual_seed(params.seed)
                    self.model.generate(**kwargs)
            except BaseException as exc:  # re-raised in the consumer's thread
                errors.append(exc)
            finally:
                streamer.end()

        worker = threading.Thread(target=work, name="ragtune-generate", daemon=True)
        worker.start()
        eos = set(_as_list(self.model.generation_config.eos_token_id)) | {self.tokenizer.eos_token_id}
        ids: list[int] = []
        text = ""
        try:
            while (token := streamer.queue.get()) is not None:
                if token not in eos:
                    ids.append(token)
                    text = self.tokenizer.decode(ids, skip_special_tokens=True)
                yield Step(text, len(ids))
        finally:
            cancel.set()
            worker.join()
            if errors:
                raise ModelError(f"generation failed in {self.name}: {errors[0]}") from errors[0]

    def _generate_kwargs(
        self, input_ids: torch.Tensor, params: SamplingParams, streamer: _QueueStreamer, cancel: threading.Event
    ) -> dict[str, Any]:
        from transformers import StoppingCriteriaList

        device = self.model.device
        kwargs: dict[str, Any] = {
            "input_ids": input_ids.to(device),
            "attention_mask": torch.ones_like(input_ids).to(device),
            "max_new_tokens": params.max_new_tokens,
            "do_sample": params.temperature > 0,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_CancelOnEvent(cancel)]),
            "pad_token_id": pad_token_id(self.tokenizer),
        }
        if params.temperature > 0:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        else:  # silence the model's own sampling defaults, which greedy decoding ignores
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs


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


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
