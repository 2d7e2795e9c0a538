"""Train a LoRA adapter (or the whole model) on a training file.

setup (model, data, optimizer) -> train (accumulated steps, eval loss, checkpoints) -> save (adapter +
manifest). Runs as one process or under `accelerate launch` (DDP, gloo on CPU); data order depends only
on the seed, so a resumed run replays exactly the batches an uninterrupted one would have seen.
"""

from __future__ import annotations

import math
import random
import resource
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from finetune.adapters import base_fingerprint, check_name, save_adapter
from finetune.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from finetune.data import dataset_sha256, pack_raw, read_records, tokenize_record
from models.config import Config, FinetuneConfig, to_dict
from models.errors import ConfigError, InputError, RagtuneError
from models.paths import data_home

# Attention projections per model family: the usual LoRA targets.
TARGET_MODULES = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gpt2": ["c_attn", "c_proj"],
}


class TrainingError(RagtuneError):
    """Training cannot go on (the loss diverged, a run would be overwritten)."""


@dataclass
class TrainResult:
    name: str
    path: Path
    steps: int
    train_loss: float
    eval_loss: float | None
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    tokens_per_s: float = 0.0
    peak_rss_mb: float = 0.0
    trainable_params: int = 0
    total_params: int = 0
    resumed_from: int = 0


def run_dir(name: str) -> Path:
    return data_home() / "runs" / check_name(name)


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


def wrap_model(model: Any, ft: FinetuneConfig, device: str) -> Any:
    if ft.method == "qlora":
        raise ConfigError(
            "finetune.method=qlora needs a CUDA GPU and `pip install bitsandbytes`; "
            f"this run is on {device}: use finetune.method=lora"
        )
    if ft.method == "full":
        model.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=ft.lora.r,
        lora_alpha=ft.lora.alpha,
        lora_dropout=ft.lora.dropout,
        target_modules=target_modules(model, ft),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def load_examples(path: Path, tokenizer: Any, ft: FinetuneConfig) -> tuple[str, list[dict[str, list[int]]]]:
    fmt, records = read_records(path)
    if fmt == "raw":
        return fmt, pack_raw(records, tokenizer, ft.max_seq_len)
    return fmt, [tokenize_record(r, tokenizer, ft.max_seq_len) for r in records]


def split(examples: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(examples) - 1, max(1, round(len(examples) * fraction))) if fraction > 0 else 0
    return [examples[i] for i in order[n_eval:]], [examples[i] for i in order[:n_eval]]


def collate(batch: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e["input_ids"]) for e in batch)

    def pad(key: str, value: int) -> torch.Tensor:
        return torch.tensor([e[key] + [value] * (width - len(e[key])) for e in batch])

    return {
        "input_ids": pad("input_ids", pad_id),
        "labels": pad("labels", -100),
        "attention_mask": pad("attention_mask", 0),
    }


def micro_batches(examples: list[Any], batch_size: int, seed: int, rank: int, world: int):
    """Endless micro-batches, reshuffled each epoch from (seed, epoch); rank r takes every world-th one."""
    epoch, count = 0, 0
    while True:
        order = list(range(len(examples)))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        for start in range(0, len(order), batch_size):
            if count % world == rank:
                yield [examples[i] for i in order[start : start + batch_size]]
            count += 1
        epoch += 1


def evaluate(model: Any, examples: list[Any], batch_size: int, pad_id: int, device: Any) -> float | None:
    if not examples:
        return None
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in collate(examples[start : start + batch_size], pad_id).items()}
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += float(model(**batch).loss) * n
            tokens += n
    model.train()
    return total / max(tokens, 1)


def train(
    config: Config, data_path: Path, name: str, *, resume: bool = False, progress: bool | None = None
) -> TrainResult:
    """Train `name` on `data_path` with `config.finetune`; returns metrics and the adapter's folder."""
    from accelerate import Accelerator
    from transformers import get_scheduler

    from models.loading import load_lm

    ft = config.finetune
    data_path = Path(data_path)
    if not data_path.is_file():
        raise InputError(f"{data_path}: no such training file; create one with `ragtune data synth DOCS -o FILE`")
    folder = run_dir(name)
    checkpoint = latest_checkpoint(folder) if folder.exists() else None
    if checkpoint is not None and not resume:
        raise TrainingError(
            f"run {name!r} has checkpoints in {folder}; pass --resume to continue it or choose another --name"
        )
    accelerator = Accelerator(gradient_accumulation_steps=1, cpu=config.llm.device == "cpu")
    torch.manual_seed(ft.seed)
    llm = replace(config.llm, dtype="float32") if ft.method == "full" else config.llm
    lm = load_lm(llm, progress=accelerator.is_main_process)
    tokenizer = lm.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    fmt, examples = load_examples(data_path, tokenizer, ft)
    train_set, eval_set = split(examples, ft.eval_fraction, ft.seed)
    model = wrap_model(lm.model, ft, lm.device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    world = accelerator.num_processes
    per_step = ft.batch_size * ft.grad_accum * world
    total_steps = ft.max_steps or max(1, math.ceil(ft.epochs * len(train_set) / per_step))
    optimizer = torch.optim.AdamW(params, lr=ft.lr, weight_decay=0.0)
    schedule = "constant_with_warmup" if ft.schedule == "constant" else ft.schedule
    scheduler = get_scheduler(
        schedule, optimizer, num_warmup_steps=int(ft.warmup_ratio * total_steps), num_training_steps=total_steps
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)

    step, losses, resumed_from = 0, [], 0
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, unwrapped, optimizer, scheduler)
        step, losses, resumed_from = state["step"], state["losses"], state["step"]
    batches = micro_batches(train_set, ft.batch_size, ft.seed, accelerator.process_index, world)
    for _ in range(step * ft.grad_accum):  # replay the data order up to the checkpoint
        next(batches)

    started, tokens = time.perf_counter(), 0
    bar = tqdm(
        total=total_steps,
        initial=step,
        desc=f"training {name}",
        unit="step",
        disable=(None if progress is None else not progress) if accelerator.is_main_process else True,
    )
    eval_loss, log_every = None, max(1, total_steps // 20)
    while step < total_steps:
        step_loss = 0.0
        for micro in range(ft.grad_accum):
            batch = {k: v.to(accelerator.device) for k, v in collate(next(batches), pad_id).items()}
            tokens += int(batch["attention_mask"].sum())
            sync = micro == ft.grad_accum - 1
            # Gradients are all-reduced only on the last micro-batch of a step.
            with accelerator.no_sync(model) if not sync else nullcontext():
                loss = model(**batch).loss
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"the loss became {float(loss.detach())} at step {step + 1}; lower finetune.lr "
                        f"(now {ft.lr}) or check the training data in {data_path}"
                    )
                accelerator.backward(loss / ft.grad_accum)
            step_loss += float(loss.detach()) / ft.grad_accum
        accelerator.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        step += 1
        losses.append(round(step_loss, 6))
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        quiet_bar = progress is None and bar.disable and accelerator.is_main_process
        if quiet_bar and (step % log_every == 0 or step == total_steps):
            # No bar (logs, CI): a plain line every ~5% so a long run still shows it is alive.
            print(f"step {step}/{total_steps} loss {step_loss:.4f}", file=sys.stderr, flush=True)
        if step % ft.save_every == 0 or step == total_steps:
            eval_started = time.perf_counter()
            eval_loss = evaluate(model, eval_set, ft.batch_size, pad_id, accelerator.device)
            started += time.perf_counter() - eval_started  # tokens/s counts training time only
            if eval_loss is not None:
                bar.write(f"step {step}: train loss {step_loss:.4f}, eval loss {eval_loss:.4f}")
            if accelerator.is_main_process and step < total_steps:
                save_checkpoint(folder, step, unwrapped, optimizer, scheduler, {"losses": losses})
            accelerator.wait_for_everyone()
    bar.close()
    seconds = time.perf_counter() - started
    result = TrainResult(
        name=name,
        path=Path(),
        steps=step,
        train_loss=losses[-1] if losses else float("nan"),
        eval_loss=eval_loss,
        losses=losses,
        seconds=seconds,
        tokens_per_s=tokens * world / seconds if seconds else 0.0,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        trainable_params=sum(p.numel() for p in params),
        total_params=sum(p.numel() for p in unwrapped.parameters()),
        resumed_from=resumed_from,
    )
    if accelerator.is_main_process:
        manifest = {
            "base_model": config.llm.model,
            "base_fingerprint": base_fingerprint(lm.path),
            "method": ft.method,
            "data": {
                "path": str(data_path.resolve()),
                "sha256": dataset_sha256(data_path),
                "format": fmt,
                "examples": len(examples),
                "train": len(train_set),
                "eval": len(eval_set),
            },
            "metrics": {k: v for k, v in vars(result).items() if k not in ("name", "path", "losses")},
            "losses": losses,
            "finetune": to_dict(ft),
            "config": to_dict(config),
            "created_at": time.time(),
        }
        result.path = save_adapter(unwrapped, name, manifest, tokenizer if ft.method == "full" else None)
        shutil.rmtree(folder, ignore_errors=True)  # the adapter is the product; checkpoints were for resuming
    accelerator.wait_for_everyone()
    return result
