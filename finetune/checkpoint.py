"""Training checkpoints in safetensors + JSON (no pickle): trainable weights, optimizer, scheduler, RNG, step.

The weights and optimizer state are whole (finetune/full_state.py gathers them under FSDP or DeepSpeed), so
a checkpoint resumes under any number of processes and any strategy. Each is published atomically as
runs/NAME/checkpoint-NNNNNN with a manifest, so the newest folder that verifies is always a complete one.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from finetune.full_state import FullState
from models.errors import IndexCorruptError, InputError
from models.storage import (
    atomic_write_json,
    describe_files,
    publish_dir,
    read_json,
    staged_dir,
    verify_files,
)

_KEEP = 2
# 2: tensors keyed by parameter name, whole (gathered) under every strategy, so any of them can resume any other.
FORMAT = 2


def save_checkpoint(run_dir: Path, step: int, full: FullState, scheduler: Any, state: dict[str, Any]) -> Path:
    """Write the gathered state as runs/NAME/checkpoint-STEP (main process only); keeps the newest two."""
    final = run_dir / f"checkpoint-{step:06d}"
    with staged_dir(run_dir, "checkpoint") as staging:
        save_file(full.weights, staging / "trainable.safetensors")
        save_file(full.slots or {"empty": torch.zeros(1)}, staging / "optimizer.safetensors")
        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():  # dropout on a GPU draws from the CUDA generators
            rng["torch_cuda"] = torch.stack(torch.cuda.get_rng_state_all())
        save_file(rng, staging / "rng.safetensors")
        atomic_write_json(
            staging / "state.json",
            {**state, "format": FORMAT, "step": step, "param_groups": full.groups, "scheduler": scheduler.state_dict()},
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


def read_checkpoint(folder: Path) -> tuple[FullState, dict[str, Any]]:
    """The gathered state and the training state (step, losses, scheduler) of a verified checkpoint."""
    state = read_json(folder / "state.json", "checkpoint state")
    if state.get("format") != FORMAT:
        raise InputError(
            f"{folder}: a checkpoint in an older format (optimizer state by position, not by parameter name); "
            f"delete {folder.parent} and train again without --resume"
        )
    slots = {k: v for k, v in load_file(folder / "optimizer.safetensors").items() if k != "empty"}
    return FullState(load_file(folder / "trainable.safetensors"), slots, state["param_groups"]), state


def restore_rng(folder: Path) -> None:
    rng = load_file(folder / "rng.safetensors")
    torch.set_rng_state(rng["torch_cpu"])
    if "torch_cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(rng["torch_cuda"]))
