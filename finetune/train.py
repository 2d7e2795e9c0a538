"""Train a LoRA or QLoRA adapter (or the whole model) on a training file.

setup (checks, model, data, optimizer, resume) -> fit (accumulated steps, eval loss, checkpoints) -> save
(adapter + manifest). Runs as one process or under `accelerate launch` (DDP, FSDP, DeepSpeed ZeRO; gloo on
CPUs); data order depends only on the seed and the process count, so a resumed run replays exactly the
batches an uninterrupted one would have seen.
"""

from __future__ import annotations

import math
import resource
import shutil
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from finetune.adapters import base_fingerprint, check_name, save_adapter
from finetune.batches import Example, collate, load_examples, micro_batches, split
from finetune.checkpoint import latest_checkpoint, read_checkpoint, restore_rng, save_checkpoint
from finetune.data import dataset_sha256
from finetune.full_state import gather, restore
from finetune.gguf_export import base_gguf_source, export_gguf_lora
from finetune.methods import check_method, count_params, load_base, method_manifest, wrap_model
from finetune.strategy import build_accelerator, check_strategy, deepspeed_engine
from models.config import Config, FinetuneConfig, to_dict
from models.device import resolve_device
from models.errors import InputError, RagtuneError
from models.loading import LoadedLM, pad_token_id
from models.paths import data_home


class TrainingError(RagtuneError):
    """Training cannot go on (the loss diverged, a run would be overwritten)."""


class GgufExportWarning(UserWarning):
    """The adapter was saved, but its GGUF LoRA copy for llama.cpp could not be written."""


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


@dataclass
class Run:
    """What setup builds and fit advances: a torchtune recipe's state as one object."""

    config: Config
    name: str
    data_path: Path
    accelerator: Any
    lm: LoadedLM
    model: Any  # as accelerate prepared it: DDP-wrapped under several processes
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    pad_id: int
    fmt: str
    train_set: list[Example]
    eval_set: list[Example]
    total_steps: int
    step: int = 0
    losses: list[float] = field(default_factory=list)
    resumed_from: int = 0
    eval_loss: float | None = None
    tokens: int = 0
    seconds: float = 0.0

    @property
    def ft(self) -> FinetuneConfig:
        return self.config.finetune

    @property
    def unwrapped(self) -> Any:
        return self.accelerator.unwrap_model(self.model)

    @property
    def engine(self) -> Any:
        """The DeepSpeed engine (the prepared model) under DeepSpeed, else None."""
        return deepspeed_engine(self.accelerator, self.model)

    @property
    def folder(self) -> Path:
        """runs/NAME: the checkpoints, until the adapter is saved."""
        return run_dir(self.name)


def run_dir(name: str) -> Path:
    return data_home() / "runs" / check_name(name)


def train(
    config: Config, data_path: Path, name: str, *, resume: bool = False, progress: bool | None = None
) -> TrainResult:
    """Train `name` on `data_path` with `config.finetune`; returns metrics and the adapter's folder."""
    run = setup(config, Path(data_path), name, resume)
    fit(run, progress)
    return save(run)


# -- setup ------------------------------------------------------------------------------------------------
def setup(config: Config, data_path: Path, name: str, resume: bool) -> Run:
    """Check the inputs, load the base for finetune.method, tokenize, build the optimizer, restore a checkpoint."""
    ft = config.finetune
    checkpoint = check_inputs(config, data_path, name, resume)
    accelerator = build_accelerator(config.llm.device)
    check_strategy(accelerator, ft)  # before the base loads
    torch.manual_seed(ft.seed)
    lm = load_base(config, str(accelerator.device), accelerator.is_main_process)
    # Tokenizers without a pad token pad with eos: padded positions are masked out of attention and loss.
    pad_id = pad_token_id(lm.tokenizer)
    fmt, examples = load_examples(data_path, lm.tokenizer, ft)
    train_set, eval_set = split(examples, ft.eval_fraction, ft.seed)
    model = wrap_model(lm.model, ft)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    total_steps = count_steps(ft, len(train_set), accelerator.num_processes)
    optimizer, scheduler = build_optimizer(params, ft, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    # FSDP replaces the parameters with sharded ones: clip the gradients of those the optimizer steps.
    params = [p for p in model.parameters() if p.requires_grad]
    run = Run(
        config=config,
        name=name,
        data_path=data_path,
        accelerator=accelerator,
        lm=lm,
        model=model,
        params=params,
        optimizer=optimizer,
        scheduler=scheduler,
        pad_id=pad_id,
        fmt=fmt,
        train_set=train_set,
        eval_set=eval_set,
        total_steps=total_steps,
    )
    if checkpoint is not None:
        resume_from(run, checkpoint)
    return run


def resume_from(run: Run, checkpoint: Path) -> None:
    """Every process reads the whole checkpoint and sets back its part: weights, optimizer, scheduler, RNG."""
    full, state = read_checkpoint(checkpoint)
    restore(run.unwrapped, run.optimizer, full, run.engine)
    run.scheduler.load_state_dict(state["scheduler"])
    restore_rng(checkpoint)
    run.step, run.losses, run.resumed_from = state["step"], state["losses"], state["step"]


def check_inputs(config: Config, data_path: Path, name: str, resume: bool) -> Path | None:
    """Refuse what would fail later, before anything heavy loads; returns the checkpoint to resume from."""
    if not data_path.is_file():
        raise InputError(f"{data_path}: no such training file; create one with `ragtune data synth DOCS -o FILE`")
    check_method(config, resolve_device(config.llm.device, "llm.device"))
    folder = run_dir(name)
    checkpoint = latest_checkpoint(folder) if folder.exists() else None
    if checkpoint is not None and not resume:
        raise TrainingError(
            f"run {name!r} has checkpoints in {folder}; pass --resume to continue it or choose another --name"
        )
    return checkpoint


def count_steps(ft: FinetuneConfig, n_train: int, world: int) -> int:
    """finetune.max_steps, else enough optimizer steps for finetune.epochs over the training split."""
    per_step = ft.batch_size * ft.grad_accum * world
    return ft.max_steps or max(1, math.ceil(ft.epochs * n_train / per_step))


def build_optimizer(params: list[torch.nn.Parameter], ft: FinetuneConfig, total_steps: int) -> tuple[Any, Any]:
    """AdamW and finetune.schedule, warming up linearly over finetune.warmup_ratio of the steps."""
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(params, lr=ft.lr, weight_decay=0.0)
    schedule = "constant_with_warmup" if ft.schedule == "constant" else ft.schedule
    scheduler = get_scheduler(
        schedule, optimizer, num_warmup_steps=int(ft.warmup_ratio * total_steps), num_training_steps=total_steps
    )
    return optimizer, scheduler


# -- fit --------------------------------------------------------------------------------------------------
def fit(run: Run, progress: bool | None) -> None:
    """Optimizer steps from run.step to run.total_steps; held-out loss and a checkpoint every save_every."""
    ft, accelerator = run.ft, run.accelerator
    batches = micro_batches(run.train_set, ft.batch_size, ft.seed, accelerator.process_index, accelerator.num_processes)
    for _ in range(run.step * ft.grad_accum):  # replay the data order up to the checkpoint
        next(batches)
    bar = progress_bar(run, progress)
    started = time.perf_counter()
    while run.step < run.total_steps:
        step_loss = train_step(run, batches)
        run.step += 1
        run.losses.append(round(step_loss, 6))
        show_step(run, bar, step_loss, progress)
        if run.step % ft.save_every == 0 or run.step == run.total_steps:
            started += evaluate_and_checkpoint(run, bar)  # tokens/s counts training time only
    bar.close()
    run.seconds = time.perf_counter() - started


def train_step(run: Run, batches: Any) -> float:
    """One optimizer step over finetune.grad_accum micro-batches; returns their mean loss."""
    ft, accelerator, model = run.ft, run.accelerator, run.model
    step_loss = 0.0
    for micro in range(ft.grad_accum):
        batch = {k: v.to(accelerator.device) for k, v in collate(next(batches), run.pad_id).items()}
        run.tokens += int(batch["attention_mask"].sum())
        sync = micro == ft.grad_accum - 1
        # Gradients are all-reduced only on the last micro-batch of a step.
        with accelerator.no_sync(model) if not sync else nullcontext():
            loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"the loss became {float(loss.detach())} at step {run.step + 1}; lower finetune.lr "
                    f"(now {ft.lr}) or check the training data in {run.data_path}"
                )
            accelerator.backward(loss / ft.grad_accum)
        step_loss += float(loss.detach()) / ft.grad_accum
    accelerator.clip_grad_norm_(run.params, 1.0)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad()
    return step_loss


def progress_bar(run: Run, progress: bool | None) -> tqdm:
    # progress None lets tqdm decide (a bar on a terminal only); processes other than the main one stay quiet.
    disable = (None if progress is None else not progress) if run.accelerator.is_main_process else True
    return tqdm(total=run.total_steps, initial=run.step, desc=f"training {run.name}", unit="step", disable=disable)


def show_step(run: Run, bar: tqdm, step_loss: float, progress: bool | None) -> None:
    bar.update(1)
    bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{run.scheduler.get_last_lr()[0]:.2e}")
    log_every = max(1, run.total_steps // 20)
    quiet_bar = progress is None and bar.disable and run.accelerator.is_main_process
    if quiet_bar and (run.step % log_every == 0 or run.step == run.total_steps):
        # No bar (logs, CI): a plain line every ~5% so a long run still shows it is alive.
        print(f"step {run.step}/{run.total_steps} loss {step_loss:.4f}", file=sys.stderr, flush=True)


def evaluate_and_checkpoint(run: Run, bar: tqdm) -> float:
    """Held-out loss, then a checkpoint (none after the last step: the adapter follows); returns eval seconds."""
    started = time.perf_counter()
    run.eval_loss = evaluate(run.model, run.eval_set, run.ft.batch_size, run.pad_id, run.accelerator.device)
    seconds = time.perf_counter() - started
    if run.eval_loss is not None:
        bar.write(f"step {run.step}: train loss {run.losses[-1]:.4f}, eval loss {run.eval_loss:.4f}")
    if run.step < run.total_steps:
        full = gather(run.unwrapped, run.optimizer, run.engine)  # a collective: every process takes part
        if run.accelerator.is_main_process:
            save_checkpoint(run.folder, run.step, full, run.scheduler, {"losses": run.losses})
    run.accelerator.wait_for_everyone()
    return seconds


def evaluate(model: Any, examples: list[Example], batch_size: int, pad_id: int, device: Any) -> float | None:
    """Mean loss per predicted token over the held-out examples; None when there are none."""
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


# -- save -------------------------------------------------------------------------------------------------
def save(run: Run) -> TrainResult:
    """Metrics on every process; the main one writes the adapter with its manifest and drops the checkpoints."""
    result = summarise(run)
    # Every process takes part: under ZeRO-3/FSDP this gathers the shards of each weight (a collective);
    # under DDP it is the unwrapped module's own state dict, no copy.
    state_dict = run.accelerator.get_state_dict(run.model)
    if run.accelerator.is_main_process:
        tokenizer = run.lm.tokenizer if run.ft.method == "full" else None  # a full fine-tune is a whole model
        result.path = save_adapter(run.unwrapped, run.name, manifest(run, result), tokenizer, state_dict)
        if run.ft.method != "full":
            write_gguf_lora(run.name, result.path, run.lm.path)
        shutil.rmtree(run.folder, ignore_errors=True)  # the adapter is the product; checkpoints were for resuming
    run.accelerator.wait_for_everyone()
    # Under a multi-process launch, leave the process group now: gloo's threads still holding work at the
    # interpreter's teardown can abort a process after the adapter was written. A no-op in one process.
    run.accelerator.end_training()
    return result


def write_gguf_lora(name: str, folder: Path, base_folder: Path) -> None:
    """Also write the adapter as a GGUF LoRA for llama.cpp when the base came from a GGUF file.

    The PEFT adapter is already saved: a failure here is reported and leaves it intact; once the cause is
    fixed, `ragtune adapters prepare NAME` writes the GGUF LoRA (answering never converts).
    """
    source = base_gguf_source(base_folder)
    if source is None:
        return  # a Hugging Face folder base: llama.cpp has no GGUF of it to apply the adapter to
    pieces, sha256 = source
    try:
        export_gguf_lora(folder, pieces, sha256)
    except (RagtuneError, OSError) as exc:
        warnings.warn(
            f"adapter {name!r} is saved (PEFT); its GGUF LoRA for llama.cpp was not written: {exc}; "
            f"fix that, then run `ragtune adapters prepare {name}`",
            GgufExportWarning,
            stacklevel=2,
        )


def summarise(run: Run) -> TrainResult:
    trainable, total = count_params(run.unwrapped)
    return TrainResult(
        name=run.name,
        path=Path(),
        steps=run.step,
        train_loss=run.losses[-1] if run.losses else float("nan"),
        eval_loss=run.eval_loss,
        losses=run.losses,
        seconds=run.seconds,
        tokens_per_s=run.tokens * run.accelerator.num_processes / run.seconds if run.seconds else 0.0,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        trainable_params=trainable,
        total_params=total,
        resumed_from=run.resumed_from,
    )


def manifest(run: Run, result: TrainResult) -> dict[str, Any]:
    """ragtune-adapter.json: base, method, data, metrics, losses and the resolved config."""
    data = {
        "path": str(run.data_path.resolve()),
        "sha256": dataset_sha256(run.data_path),
        "format": run.fmt,
        "examples": len(run.train_set) + len(run.eval_set),
        "train": len(run.train_set),
        "eval": len(run.eval_set),
    }
    return {
        "base_model": run.config.llm.model,
        "base_fingerprint": base_fingerprint(run.lm.path),
        # The GGUF the base was dequantised from (None for a Hugging Face folder): llama.cpp runs on it.
        "base_gguf_sha256": (base_gguf_source(run.lm.path) or (None, None))[1],
        **method_manifest(run.config, run.lm),
        "data": data,
        "metrics": {k: v for k, v in vars(result).items() if k not in ("name", "path", "losses")},
        "losses": run.losses,
        "finetune": to_dict(run.ft),
        "config": to_dict(run.config),
        "created_at": time.time(),
    }
