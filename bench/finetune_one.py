"""One (model, method) of the fine-tuning benchmark, run in a child process of its own: train, then for LoRA
load, apply and merge the adapter; the figures go to a JSON file the parent reads."""

from __future__ import annotations

import argparse
import gc
import json
import re
import resource
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from bench.common import say
from models.config import load_config
from models.device import resolve_dtype
from models.storage import folder_bytes
from ragtune.compose import quiet_libraries


def slug(model: str) -> str:
    """A preset name as is; a model folder or file as its last part, for adapter and file names."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model).name).strip(".-") or "model"


def folder_mb(folder: Path) -> float:
    return folder_bytes(folder) / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def overrides_for(args: argparse.Namespace, model: str, method: str) -> list[str]:
    ours = [
        f"llm.model={model}",
        f"llm.device={args.device}",
        f"finetune.method={method}",
        f"finetune.max_steps={args.steps}",
        f"finetune.batch_size={args.batch_size}",
        f"finetune.max_seq_len={args.max_seq_len}",
        "finetune.grad_accum=1",
        # No held-out split: train() would run an eval pass inside its timed loop at the last step.
        "finetune.eval_fraction=0",
    ]
    return ours + args.overrides


def measure_one(args: argparse.Namespace) -> dict[str, Any]:
    from finetune.adapters import apply_adapter, merge_adapter
    from finetune.train import train
    from models.loading import load_lm

    model, method = args.one
    config = load_config(None, overrides_for(args, model, method))
    cuda = args.device == "cuda"
    dtype = torch.float32 if method == "full" else resolve_dtype(config.llm.dtype, args.device)
    name = f"bench-{slug(model)}-{method}-{args.device}"
    result = train(config, args.data, name, progress=False)
    out: dict[str, Any] = {
        "dtype": str(dtype).removeprefix("torch."),
        "steps": result.steps,
        "seconds": result.seconds,
        "tokens_per_s": result.tokens_per_s,
        "train_peak_rss_mb": result.peak_rss_mb,
        "trainable_params": result.trainable_params,
        "total_params": result.total_params,
        "losses": result.losses,
        "disk_mb": folder_mb(result.path),
        "files": sorted(p.name for p in result.path.iterdir()),
    }
    if cuda:
        out["train_peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    say(
        f"[{name}] {result.steps} steps in {result.seconds:.1f}s, {result.tokens_per_s:.0f} tokens/s, "
        f"loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}, peak RSS {result.peak_rss_mb:.0f} MiB, "
        f"{out['disk_mb']:.1f} MiB on disk"
    )
    adapter = result.path
    del result
    gc.collect()
    if method == "lora":
        # As a user would: a fresh base model, the adapter applied (verified against its manifest), merged.
        started = time.perf_counter()
        lm = load_lm(config.llm, progress=False)
        loaded = time.perf_counter()
        peft_model = apply_adapter(lm.model, lm.path, name)
        applied = time.perf_counter()
        merged = merge_adapter(peft_model)
        if cuda:
            torch.cuda.synchronize()
        done = time.perf_counter()
        out["merge"] = {"load_s": loaded - started, "apply_s": applied - loaded, "merge_s": done - applied}
        say(f"[{name}] load {loaded - started:.2f}s + apply {applied - loaded:.2f}s + merge {done - applied:.2f}s")
        del lm, peft_model, merged
        gc.collect()
    out["process_peak_rss_mb"] = peak_rss_mb()
    if cuda:
        out["process_peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    shutil.rmtree(adapter, ignore_errors=True)  # a full 0.5B model is ~2 GB; the temp home goes at the end anyway
    return out


def run_one(args: argparse.Namespace) -> int:
    """Child process: one (model, method) on one device; the figures (or the failure) go to --json-out."""
    quiet_libraries()
    try:
        out = measure_one(args)
        status = 0
    except MemoryError as exc:
        out = {"error": f"MemoryError (out of RAM){': ' + str(exc) if str(exc) else ''}"}
        status = 1
    except Exception as exc:  # reported as a failed row by the parent, which goes on with the others
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        out = {"error": f"{type(exc).__name__}: {first}"}
        traceback.print_exc()
        status = 1
    out["pid_peak_rss_mb"] = peak_rss_mb()
    args.json_out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return status
