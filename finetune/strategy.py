"""What the trainer cannot honour under DeepSpeed or FSDP, refused with a ConfigError before training starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.config import FinetuneConfig
from models.errors import ConfigError


def check_strategy(accelerator: Any, ft: FinetuneConfig, total_steps: int, checkpoint: Path | None) -> None:
    """Refuse, under DeepSpeed or FSDP, the settings this trainer cannot honour there (before any weight moves)."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind not in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        return
    strategy = "DeepSpeed" if kind == DistributedType.DEEPSPEED else "FSDP"
    # Checkpoints hold the local trainable weights and a plain PyTorch optimizer state: under DeepSpeed the
    # optimizer state is DeepSpeed's own (partitioned), under ZeRO-3/FSDP the weights are shards. Refuse
    # rather than write checkpoints that would resume wrongly; the final adapter is saved from gathered weights.
    if checkpoint is not None:
        raise ConfigError(
            f"--resume: checkpoints in {checkpoint.parent} cannot be resumed under {strategy}; "
            "resume them with configs/accelerate/ddp.yaml or a single process"
        )
    if ft.save_every < total_steps:
        raise ConfigError(
            f"finetune.save_every={ft.save_every}: mid-run checkpoints need DDP or a single process, "
            f"not {strategy}; set finetune.save_every to at least {total_steps} (this run's steps) to write none"
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
