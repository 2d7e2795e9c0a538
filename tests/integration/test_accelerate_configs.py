"""configs/accelerate/ddp.yaml as shipped, run for real: two processes (gloo on CPU) train one adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from finetune.adapters import list_adapters, read_adapter
from finetune.train import train
from models.config import load_config
from tests.conftest import REPO


@pytest.mark.slow
def test_the_ddp_config_trains_one_adapter_over_two_processes(
    tiny_lm_path: Path, tmp_path: Path, ragtune_home: Path
) -> None:
    data = tmp_path / "train.jsonl"
    pairs = [("When does the library open?", "At nine."), ("What does a card cost?", "45 dollars.")] * 6
    data.write_text("".join(json.dumps({"prompt": q, "completion": a}) + "\n" for q, a in pairs))
    settings = [
        f"llm.model={tiny_lm_path}",
        "llm.dtype=float32",
        "llm.device=cpu",
        "finetune.epochs=1",
        "finetune.batch_size=2",
        "finetune.eval_fraction=0",
    ]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/ddp.yaml"]
    command += ["scripts/train_adapter.py", "--data", str(data), "--name", "ddp"]
    command += [arg for s in settings for arg in ("--set", s)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAGTUNE_HOME": str(ragtune_home), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [a.name for a in list_adapters()] == ["ddp"] and done.stdout.count("adapter ddp:") == 1  # main process
    # One epoch of 12 examples at 2 per process and step: 3 steps with 2 processes (one alone would take 6).
    assert read_adapter("ddp").manifest["metrics"]["steps"] == 3
    # The adapter saved from the gathered state dict holds the same tensors, by name and shape, as one
    # written by a single process; and it was trained (LoRA B starts at zero).
    train(load_config(None, [*settings, "finetune.max_steps=1"]), data, "single", progress=False)
    ddp, single = (load_file(read_adapter(n).path / "adapter_model.safetensors") for n in ("ddp", "single"))
    assert {k: v.shape for k, v in ddp.items()} == {k: v.shape for k, v in single.items()} and ddp
    assert all(bool(v.isfinite().all()) for v in ddp.values())
    assert any(float(v.abs().max()) > 0 for k, v in ddp.items() if "lora_B" in k)
