"""Training checkpoints in safetensors + JSON (no pickle): trainable weights, optimizer, scheduler, RNG, step.

Each checkpoint is published atomically as runs/NAME/checkpoint-NNNNNN with a manifest, so the newest
folder that verifies is always a complete one.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from models.errors import IndexCorruptError
from models.storage import (
    atomic_write_json,
    describe_files,
    publish_dir,
    read_json,
    staged_dir,
    verify_files,
)

_KEEP = 2


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
) -> Path:
    final = run_dir / f"checkpoint-{step:06d}"
    with staged_dir(run_dir, "checkpoint") as staging:
        trainable = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
        save_file(trainable, staging / "trainable.safetensors")
        opt = optimizer.state_dict()
        tensors = {
            f"{i}.{key}": value.contiguous().cpu()
            for i, slot in opt["state"].items()
            for key, value in slot.items()
            if torch.is_tensor(value)
        }
        save_file(tensors or {"empty": torch.zeros(1)}, staging / "optimizer.safetensors")
        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():  # dropout on a GPU draws from the CUDA generators
            rng["torch_cuda"] = torch.stack(torch.cuda.get_rng_state_all())
        save_file(rng, staging / "rng.safetensors")
        atomic_write_json(
            staging / "state.json",
            {
                **state,
                "step": step,
                "param_groups": opt["param_groups"],
                "scheduler": scheduler.state_dict(),
            },
        )
        names = ["trainable.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"]
        atomic_write_json(staging / "manifest.json", {"files": describe_files(staging, names)})
        publish_dir(staging, final, replace=True)
    for old in sorted(run_dir.glob("checkpoint-*"))[:-_KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint whose files all match its manifest; damaged ones are skipped."""
    for folder in sorted(run_dir.glob("checkpoint-*"), reverse=True):
        try:
            verify_files(folder, read_json(folder / "manifest.json", "checkpoint manifest")["files"])
            return folder
        except (IndexCorruptError, FileNotFoundError, KeyError):
            continue
    return None


def load_checkpoint(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG in place; returns the saved training state."""
    state = read_json(folder / "state.json", "checkpoint state")
    trainable = load_file(folder / "trainable.safetensors")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in trainable.items():
            params[name].copy_(value)
    tensors = load_file(folder / "optimizer.safetensors")
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key != "empty":
            index, _, field = key.partition(".")
            slots.setdefault(int(index), {})[field] = value
    optimizer.load_state_dict({"state": slots, "param_groups": state["param_groups"]})
    scheduler.load_state_dict(state["scheduler"])
    rng = load_file(folder / "rng.safetensors")
    torch.set_rng_state(rng["torch_cpu"])
    if "torch_cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(rng["torch_cuda"]))
    return state
