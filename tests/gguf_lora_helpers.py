"""Random PEFT LoRA adapters on packaged LMs; PEFT on transformers side by side with GGUF LoRA on llama.cpp."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from finetune.adapters import MANIFEST, base_fingerprint
from models.config import LLMConfig
from models.loading import load_lm
from models.storage import atomic_write_json, describe_files

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "down_proj")
PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that adds two numbers.",
    "Name three colours of the rainbow.",
    "How many legs does a spider have?",
    "Explain what a library card is in one sentence.",
    "What does HTTP stand for?",
    "Give me a synonym for 'happy'.",
    "What is 12 times 12?",
    "Translate 'good morning' into Spanish.",
    "Why is the sky blue? Answer briefly.",
]


def random_lora_folder(
    folder: Path, model: str, seed: int, targets: tuple[str, ...] = TARGETS, std: float = 0.02
) -> Path:
    """A PEFT LoRA (r=4, alpha=8) on `model` whose B matrices are random (PEFT starts them at zero: a no-op)."""
    from peft import LoraConfig, get_peft_model

    lm = load_lm(LLMConfig(model=model, dtype="float32", device="cpu"), progress=False)
    torch.manual_seed(seed)
    peft = get_peft_model(lm.model, LoraConfig(r=4, lora_alpha=8, target_modules=list(targets)))
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, std)
    peft.save_pretrained(folder, safe_serialization=True)
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    manifest = {
        "name": folder.name,
        "base_model": model,
        "base_fingerprint": base_fingerprint(lm.path),
        "method": "lora",
        "files": describe_files(folder, names),
    }
    atomic_write_json(folder / MANIFEST, manifest)
    return folder


@dataclass
class Agreement:
    """Greedy continuations of each prompt: base and adapted, on transformers (PEFT) and on llama.cpp."""

    tokens: int
    hf_base: list[list[int]] = field(default_factory=list)
    hf_peft: list[list[int]] = field(default_factory=list)
    cpp_base: list[list[int]] = field(default_factory=list)
    cpp_lora: list[list[int]] = field(default_factory=list)
    delta_cosines: list[float] = field(default_factory=list)  # next-token logit shift, PEFT vs llama.cpp LoRA
    seconds: float = 0.0

    @property
    def share(self) -> float:
        """Prompts whose llama.cpp+LoRA continuation equals PEFT's."""
        return _share(self.cpp_lora, self.hf_peft)

    @property
    def base_share(self) -> float:
        """The same, for the two engines without the adapter (the quantisation's own disagreement)."""
        return _share(self.cpp_base, self.hf_base)

    @property
    def moved(self) -> int:
        """Prompts where the adapter changed PEFT's continuation."""
        return sum(p != b for p, b in zip(self.hf_peft, self.hf_base))

    @property
    def moved_along(self) -> int:
        """Of those, prompts where llama.cpp's continuation changed too, to PEFT's."""
        return sum(p != b and c == p for p, b, c in zip(self.hf_peft, self.hf_base, self.cpp_lora))

    def summary(self) -> str:
        return (
            f"{len(self.hf_base)} prompts x {self.tokens} greedy tokens: llama.cpp+LoRA == PEFT on "
            f"{self.share:.0%} (bases alone agree on {self.base_share:.0%}); the adapter moved PEFT on "
            f"{self.moved} prompts and llama.cpp followed on {self.moved_along}; next-token logit shift "
            f"cosine min {min(self.delta_cosines):.3f} mean {np.mean(self.delta_cosines):.3f} ({self.seconds:.0f} s)"
        )


def compare_engines(model: str, base_gguf: Path, peft_folder: Path, lora_gguf: Path, tokens: int = 12) -> Agreement:
    """Run every prompt through the four combinations on the same token ids (the GGUF's own tokenizer)."""
    import llama_cpp
    from peft import PeftModel

    started = time.perf_counter()
    lm = load_lm(LLMConfig(model=model, dtype="float32", device="cpu"), progress=False)
    prompts = [
        lm.tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True)
        for p in PROMPTS
    ]
    prompts = [list(p["input_ids"] if isinstance(p, dict) else p) for p in prompts]
    result = Agreement(tokens)
    eos = lm.model.generation_config.eos_token_id
    ends = set(eos if isinstance(eos, list) else [eos])
    hf_base_logits = [_hf_run(lm.model, ids, tokens, result.hf_base) for ids in prompts]
    peft = PeftModel.from_pretrained(lm.model, str(peft_folder), is_trainable=False).eval()
    hf_peft_logits = [_hf_run(peft, ids, tokens, result.hf_peft) for ids in prompts]
    del peft, lm
    cpp_logits = {}
    for key, lora in (("base", None), ("lora", lora_gguf)):
        llama = llama_cpp.Llama(
            model_path=str(base_gguf), lora_path=str(lora) if lora else None, n_ctx=512, n_threads=2, verbose=False
        )
        runs = result.cpp_base if lora is None else result.cpp_lora
        cpp_logits[key] = [_cpp_run(llama, ids, tokens, runs, ends) for ids in prompts]
        llama.close()
    for hb, hp, cb, cl in zip(hf_base_logits, hf_peft_logits, cpp_logits["base"], cpp_logits["lora"]):
        a, b = hp - hb, cl - cb
        result.delta_cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    result.seconds = time.perf_counter() - started
    return result


def _hf_run(model, ids: list[int], tokens: int, into: list[list[int]]) -> np.ndarray:
    """Greedy tokens after `ids`; returns the first step's logits."""
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=tokens,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=0,
        )
    into.append(out.sequences[0, len(ids) :].tolist())
    return out.scores[0][0].float().numpy()


def _cpp_run(llama, ids: list[int], tokens: int, into: list[list[int]], ends: set[int]) -> np.ndarray:
    """Greedy tokens after `ids`, stopping where transformers would; returns the first step's logits."""
    llama.reset()
    llama.eval(ids)
    first = np.array(llama.scores[llama.n_tokens - 1], dtype=np.float32)
    out = []
    for _ in range(tokens):
        token = int(np.argmax(llama.scores[llama.n_tokens - 1]))
        out.append(token)
        if token in ends:
            break
        llama.eval([token])
    into.append(out)
    return first


def _share(a: list[list[int]], b: list[list[int]]) -> float:
    return sum(x == y for x, y in zip(a, b)) / max(len(a), 1)
