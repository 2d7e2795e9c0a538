"""QLoRA: the frozen base held in 4-bit NF4 (bitsandbytes), LoRA trained on top in the compute dtype.

The adapter is an ordinary PEFT LoRA adapter: at inference it applies to the un-quantised base like any
other. bitsandbytes is the optional extra `qlora`; 0.50.2 runs 4-bit on CUDA GPUs and on CPUs.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from models.config import LLMConfig
from models.device import resolve_dtype
from models.errors import ConfigError
from models.loading import LoadedLM, load_lm

INSTALL = "pip install 'bitsandbytes==0.50.2'"
QUANT_TYPE = "nf4"


def import_bitsandbytes() -> Any:
    """bitsandbytes, or a ConfigError naming the `pip install` that provides it."""
    # On CPUs with AVX512-BF16 bitsandbytes looks for an optional hub kernel (the `kernels` package) and warns
    # when it is missing or unreachable, as offline it always is; its built-in CPU kernel is used instead.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    try:
        import bitsandbytes
    except ImportError as exc:
        raise ConfigError(
            f"finetune.method=qlora needs bitsandbytes, which is not installed ({exc}): {INSTALL}"
        ) from None
    return bitsandbytes


def check_qlora(device: str) -> None:
    """Fail before any model is loaded unless bitsandbytes can quantise to 4-bit NF4 on `device`."""
    bnb = import_bitsandbytes()
    try:
        # A 64x64 round trip exercises the same quantise/dequantise kernels the 4-bit layers use.
        probe = torch.randn(64, 64, device=device)
        packed, state = bnb.functional.quantize_4bit(probe, quant_type=QUANT_TYPE, compress_statistics=True)
        bnb.functional.dequantize_4bit(packed, state)
    except (RuntimeError, OSError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"finetune.method=qlora: bitsandbytes {bnb.__version__} cannot run 4-bit NF4 on llm.device={device} "
            f"({type(exc).__name__}: {exc}); run on a CUDA GPU (llm.device=cuda) with {INSTALL}, "
            "or set finetune.method=lora"
        ) from None


def quantization(compute_dtype: torch.dtype) -> dict[str, Any]:
    """The 4-bit settings, as recorded in the adapter's manifest."""
    return {
        "bits": 4,
        "quant_type": QUANT_TYPE,
        "double_quant": True,
        "compute_dtype": str(compute_dtype).removeprefix("torch."),
        "bitsandbytes": import_bitsandbytes().__version__,
    }


def load_4bit(config: LLMConfig, device: str, progress: bool = True) -> LoadedLM:
    """Tokenizer + causal LM whose Linear layers are quantised to NF4 while loading, placed on `device`."""
    from transformers import BitsAndBytesConfig

    import_bitsandbytes()
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=QUANT_TYPE,
        bnb_4bit_compute_dtype=resolve_dtype(config.dtype, device.split(":")[0]),
        # Quantising the quantisation constants too saves ~0.4 bits per weight at no cost in quality.
        bnb_4bit_use_double_quant=True,
    )
    # Each process of a multi-device run loads straight onto its own device.
    return load_lm(config, progress, quantization=quant, device=device)


def prepare_4bit(model: Any) -> Any:
    """Ready a 4-bit model for LoRA: base frozen, norms and embeddings in float32, activation checkpointing."""
    from peft import prepare_model_for_kbit_training

    # Checkpointing trades recomputation for activation memory, the other half of what QLoRA saves;
    # the non-reentrant form works under DDP and replays dropout exactly (the RNG state is kept).
    return prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False}
    )
