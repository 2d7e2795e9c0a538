"""What each finetune.method loads and trains: lora, qlora (LoRA over a 4-bit base) and full.

lora trains adapters over the base in llm.dtype, qlora over the base in 4-bit NF4 (finetune.qlora, the one
module that names bitsandbytes), full every weight in float32.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from models.config import Config, FinetuneConfig
from models.errors import ConfigError
from models.loading import LoadedLM

# Attention projections per model family: the usual LoRA targets.
TARGET_MODULES = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gpt2": ["c_attn", "c_proj"],
}


def check_method(config: Config, device: str) -> None:
    """Refuse, before any model loads, a method that cannot run on `device` (qlora without bitsandbytes)."""
    if config.finetune.method == "qlora":
        from finetune.qlora import check_qlora

        check_qlora(device)


def load_base(config: Config, device: str, progress: bool) -> LoadedLM:
    """The base model as finetune.method trains it: 4-bit on `device` for qlora, else through load_lm."""
    from models.loading import load_lm

    if config.finetune.method == "qlora":
        from finetune.qlora import load_4bit

        return load_4bit(config.llm, device, progress)
    # Full fine-tuning updates every weight: in float32 small AdamW updates are not rounded away.
    llm = replace(config.llm, dtype="float32") if config.finetune.method == "full" else config.llm
    return load_lm(llm, progress=progress)


def target_modules(model: Any, ft: FinetuneConfig) -> list[str]:
    if ft.lora.target_modules:
        return list(ft.lora.target_modules)
    family = model.config.model_type
    if family not in TARGET_MODULES:
        raise ConfigError(
            f"no default LoRA targets for model type {family!r}; set finetune.lora.target_modules "
            "to the names of its attention projections"
        )
    return TARGET_MODULES[family]


def wrap_model(model: Any, ft: FinetuneConfig) -> Any:
    """The model with the parameters finetune.method trains left trainable: all, or LoRA's."""
    if ft.method == "full":
        model.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    if ft.method == "qlora":
        from finetune.qlora import prepare_4bit

        model = prepare_4bit(model)
    lora = LoraConfig(
        r=ft.lora.r,
        lora_alpha=ft.lora.alpha,
        lora_dropout=ft.lora.dropout,
        target_modules=target_modules(model, ft),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def count_params(model: Any) -> tuple[int, int]:
    """(trainable, all) parameters; a 4-bit weight counts its original elements, not its packed bytes."""
    trainable = total = 0
    for p in model.parameters():
        state = getattr(p, "quant_state", None)
        n = state.shape.numel() if state is not None else p.numel()
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def method_manifest(config: Config, lm: LoadedLM) -> dict[str, Any]:
    """What the adapter's manifest records about the method: its name, and the 4-bit settings for qlora."""
    if config.finetune.method != "qlora":
        return {"method": config.finetune.method}
    from finetune.qlora import quantization

    return {"method": "qlora", "quantization": quantization(lm.dtype)}
