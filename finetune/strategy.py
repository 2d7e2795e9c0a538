"""The Accelerator for the launch at hand (DDP, FSDP, DeepSpeed, one process) and what the trainer refuses there."""

from __future__ import annotations

import os
from typing import Any

import torch

from models.config import FinetuneConfig
from models.errors import ConfigError


def launched_with(kind: str) -> bool:
    """Whether `accelerate launch` was given a config of this kind ("DEEPSPEED" or "FSDP")."""
    return os.environ.get(f"ACCELERATE_USE_{kind}", "false").lower() == "true"


def build_accelerator(device: str) -> Any:
    """accelerate's Accelerator; DeepSpeed without a GPU runs on its CPU accelerator over gloo."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    if launched_with("DEEPSPEED") and not torch.cuda.is_available():
        # Without a GPU accelerate picks no process-group backend, so each process would believe it is alone
        # while DeepSpeed partitions across all of them; naming gloo makes both agree on ranks and world size.
        return Accelerator(gradient_accumulation_steps=1, kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")])
    return Accelerator(gradient_accumulation_steps=1, cpu=device == "cpu")


def deepspeed_engine(accelerator: Any, model: Any) -> Any:
    """The DeepSpeed engine accelerate prepared (None under any other strategy)."""
    from accelerate.utils import DistributedType

    return model if accelerator.distributed_type == DistributedType.DEEPSPEED else None


def check_strategy(accelerator: Any, ft: FinetuneConfig) -> None:
    """Refuse, before any weight moves, what this launch cannot honour."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if launched_with("FSDP") and kind != DistributedType.FSDP:
        # accelerate turns FSDP on only over GPUs (or other accelerators): on a CPU the processes would
        # silently train as plain DDP, or each alone, under a config that promises sharding.
        raise ConfigError(
            f"configs/accelerate/fsdp.yaml: accelerate runs FSDP on GPUs only, and this launch got {kind.value}; "
            "on CPUs use configs/accelerate/ddp.yaml (or zero2.yaml / zero3.yaml, which DeepSpeed runs on CPUs)"
        )
    if kind == DistributedType.DEEPSPEED:
        check_deepspeed(accelerator.state.deepspeed_plugin.deepspeed_config, ft)


def check_deepspeed(settings: dict[str, Any], ft: FinetuneConfig) -> None:
    """finetune.grad_accum=1 and the DeepSpeed JSON's micro-batch equal to finetune.batch_size."""
    # accelerate marks every backward as an accumulation boundary (this trainer accumulates by itself), so
    # DeepSpeed steps its optimizer after each one: finetune.grad_accum>1 would step on every micro-batch.
    if ft.grad_accum != 1:
        raise ConfigError(
            f"finetune.grad_accum={ft.grad_accum}: under DeepSpeed set finetune.grad_accum=1 "
            "(raise finetune.batch_size and train_micro_batch_size_per_gpu in the DeepSpeed JSON instead)"
        )
    accumulation = settings.get("gradient_accumulation_steps")
    if isinstance(accumulation, int) and accumulation != 1:
        raise ConfigError(f"DeepSpeed JSON: gradient_accumulation_steps is {accumulation}; set it to 1")
    micro = settings.get("train_micro_batch_size_per_gpu")
    if isinstance(micro, int) and micro != ft.batch_size:
        # The trainer feeds its own batches (no DataLoader for accelerate to read the size from).
        raise ConfigError(
            f"finetune.batch_size={ft.batch_size} differs from train_micro_batch_size_per_gpu={micro} in the "
            "DeepSpeed JSON; set them equal"
        )
