"""configs/accelerate/ as shipped, run for real with two processes on CPU (gloo): DDP trains one adapter; under
DeepSpeed ZeRO-2/3, FSDP and DDP a run interrupted right after a checkpoint and resumed ends with the very
adapter an uninterrupted run ends with (ZeRO-2's measured against DDP's, to float rounding), and a checkpoint
written under one strategy resumes under another.

accelerate turns FSDP on only over GPUs, so the FSDP runs use tests/integration/fsdp_worker.py under torchrun:
FSDP2 applied as fsdp.yaml asks, driving the trainer's model, optimizer, data order and checkpoint code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
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


# Four optimizer steps of 4 examples per process, a checkpoint after step 2; a high rate so that every step
# moves the adapter well beyond the tolerances below (an optimizer state lost on resume shows).
RESUME_SETTINGS = [
    "llm.dtype=float32",
    "llm.device=cpu",
    "finetune.max_steps=4",
    "finetune.save_every=2",
    "finetune.batch_size=4",
    "finetune.grad_accum=1",
    "finetune.eval_fraction=0",
    "finetune.lr=0.01",
]
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
INTERRUPTED = str(REPO / "tests" / "integration" / "interrupted_train.py")


@pytest.fixture(scope="module")
def resume_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("resume-data") / "train.jsonl"
    pairs = [("When does the library open?", "At nine."), ("What does a card cost?", "45 dollars.")] * 6
    data.write_text("".join(json.dumps({"prompt": q, "completion": a}) + "\n" for q, a in pairs))
    return data


def run_ok(command: list[str], home: Path, **extra: str) -> str:
    """Run a launch to completion (exit 0) from the repository root; returns its stdout."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAGTUNE_HOME": str(home), "OMP_NUM_THREADS": "1", **extra}
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def run_interrupted(command: list[str], home: Path) -> None:
    """The same launch through interrupted_train.py, every process stopping dead after the step-2 checkpoint."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAGTUNE_HOME": str(home), "OMP_NUM_THREADS": "1", "STOP_AT": "2"}
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and (home / "runs" / "x" / "checkpoint-000002" / "manifest.json").is_file()
    assert not (home / "adapters" / "x").exists()


def trainer(
    config: str, data: Path, model: Path, script: str = "scripts/train_adapter.py", precision: str = "no"
) -> list[str]:
    settings = [f"llm.model={model}", *RESUME_SETTINGS]
    command = [*LAUNCH, config, "--mixed_precision", precision, script, "--data", str(data), "--name", "x"]
    return command + [arg for s in settings for arg in ("--set", s)]


def adapter_of(home: Path) -> dict[str, torch.Tensor]:
    return load_file(home / "adapters" / "x" / "adapter_model.safetensors")


def assert_same_adapter(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys() and a
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=atol) for k in a), max(
        float((a[k] - b[k]).abs().max()) for k in a
    )
    assert any(float(v.abs().max()) > 1e-3 for k, v in a.items() if "lora_B" in k)  # trained (B starts at 0)


@pytest.fixture(scope="module")
def ddp_runs(tiny_lm_path: Path, resume_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One uninterrupted DDP run, and one stopped dead after its step-2 checkpoint (copy it before resuming):
    shared by the tests that resume a DDP checkpoint, each launch taking ~10 s of two processes."""
    straight, stopped = tmp_path_factory.mktemp("ddp-straight"), tmp_path_factory.mktemp("ddp-stopped")
    run_ok(trainer("configs/accelerate/ddp.yaml", resume_data, tiny_lm_path), straight)
    run_interrupted(trainer("configs/accelerate/ddp.yaml", resume_data, tiny_lm_path, INTERRUPTED), stopped)
    return straight, stopped


def stopped_copy(ddp_runs: tuple[Path, Path], home: Path) -> Path:
    shutil.copytree(ddp_runs[1], home)
    return home


@pytest.mark.slow
@pytest.mark.parametrize(("name", "precision"), [("ddp", "no"), ("zero2", "no"), ("zero3", "bf16")])
def test_a_resumed_run_ends_as_an_uninterrupted_one(
    name: str, precision: str, tiny_lm_path: Path, resume_data: Path, tmp_path: Path, ddp_runs: tuple[Path, Path]
) -> None:
    if name.startswith("zero"):
        pytest.importorskip("deepspeed", reason="pip install -e '.[deepspeed]'")
    config = f"configs/accelerate/{name}.yaml"
    # In fp32 the uninterrupted DDP run is the reference for ZeRO-2 too (one launch fewer): DeepSpeed reduces
    # gradients in another order, so the two agree to float rounding (within 1e-6), not bit for bit. Under bf16
    # the reference is an uninterrupted run of the same config.
    own_reference = name != "ddp" and precision != "no"
    straight = tmp_path / "straight" if own_reference else ddp_runs[0]
    resumed = tmp_path / "resumed"
    if name == "ddp":
        stopped_copy(ddp_runs, resumed)
    else:
        if own_reference:
            run_ok(trainer(config, resume_data, tiny_lm_path, precision=precision), straight)
        run_interrupted(trainer(config, resume_data, tiny_lm_path, INTERRUPTED, precision), resumed)
    out = run_ok([*trainer(config, resume_data, tiny_lm_path, precision=precision), "--resume"], resumed)
    assert "adapter x: 4 steps" in out
    manifests = [json.loads((h / "adapters" / "x" / "ragtune-adapter.json").read_text()) for h in (straight, resumed)]
    assert manifests[1]["metrics"]["resumed_from"] == 2
    exact = name == "ddp" or own_reference  # the same strategy on both sides: the same bits
    losses = [manifest["losses"] for manifest in manifests]
    assert losses[0] == losses[1] if exact else torch.allclose(*map(torch.tensor, losses), rtol=0, atol=1e-6)
    # Gathered and set back in fp32 on the same partitions (under bf16: the fp32 master weights, and the bf16
    # copy the forward pass reads cast from them): the same bits (measured: identical on CPU).
    assert_same_adapter(adapter_of(straight), adapter_of(resumed), atol=1e-7 if exact else 1e-6)


@pytest.mark.slow
def test_a_ddp_checkpoint_resumes_under_zero3(
    tiny_lm_path: Path, resume_data: Path, tmp_path: Path, ddp_runs: tuple[Path, Path]
) -> None:
    pytest.importorskip("deepspeed", reason="pip install -e '.[deepspeed]'")
    crossed = stopped_copy(ddp_runs, tmp_path / "crossed")
    run_ok([*trainer("configs/accelerate/zero3.yaml", resume_data, tiny_lm_path), "--resume"], crossed)
    # DeepSpeed reduces gradients in another order than DDP: equal to float rounding (measured: 1.5e-8).
    assert_same_adapter(adapter_of(ddp_runs[0]), adapter_of(crossed), atol=1e-6)


def fsdp_worker(data: Path, model: Path) -> list[str]:
    """tests/integration/fsdp_worker.py over 2 processes (torchrun), with the resume settings."""
    worker = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    worker += [str(REPO / "tests" / "integration" / "fsdp_worker.py"), "--data", str(data)]
    return worker + [arg for s in [f"llm.model={model}", *RESUME_SETTINGS] for arg in ("--set", s)]


@pytest.mark.slow
def test_fsdp_checkpoints_resume_exactly_and_under_ddp(tiny_lm_path: Path, resume_data: Path, tmp_path: Path) -> None:
    worker = fsdp_worker(resume_data, tiny_lm_path)
    runs, home = tmp_path / "runs", tmp_path / "home"
    out = run_ok([*worker, "--run-dir", str(runs / "a"), "--out", str(tmp_path / "a.safetensors")], home)
    straight_losses = out.split("losses", 1)[1].strip()
    stopped = subprocess.run(
        [*worker, "--run-dir", str(runs / "b"), "--out", str(tmp_path / "b.safetensors"), "--stop-at", "2"],
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        timeout=300,
    )
    assert stopped.returncode != 0 and [p.name for p in (runs / "b").glob("checkpoint-*")] == ["checkpoint-000002"]
    shutil.copytree(runs / "b", home / "runs" / "x")  # the same checkpoint, for the DDP resume below
    out = run_ok([*worker, "--run-dir", str(runs / "b"), "--out", str(tmp_path / "b.safetensors"), "--resume"], home)
    assert out.split("losses", 1)[1].strip() == straight_losses
    fsdp, resumed = (load_file(tmp_path / f"{n}.safetensors") for n in ("a", "b"))
    # The shards are gathered whole and split again the same way: the same bits (measured: identical).
    assert_same_adapter(fsdp, resumed, atol=1e-7)
    # The FSDP checkpoint, resumed by the trainer under configs/accelerate/ddp.yaml (measured: identical).
    run_ok([*trainer("configs/accelerate/ddp.yaml", resume_data, tiny_lm_path), "--resume"], home)
    ddp = {k.replace(".weight", ".default.weight"): v for k, v in adapter_of(home).items()}
    assert_same_adapter(fsdp, ddp, atol=1e-6)


@pytest.mark.slow
def test_a_ddp_checkpoint_resumes_under_fsdp(
    tiny_lm_path: Path, resume_data: Path, tmp_path: Path, ddp_runs: tuple[Path, Path]
) -> None:
    worker, home = fsdp_worker(resume_data, tiny_lm_path), stopped_copy(ddp_runs, tmp_path / "home")
    run_ok([*worker, "--run-dir", str(tmp_path / "straight"), "--out", str(tmp_path / "a.safetensors")], home)
    resume = ["--run-dir", str(home / "runs" / "x"), "--out", str(tmp_path / "b.safetensors"), "--resume"]
    run_ok([*worker, *resume], home)
    fsdp, crossed = (load_file(tmp_path / f"{n}.safetensors") for n in ("a", "b"))
    # Two steps of DDP, then two of FSDP, against four of FSDP (measured: identical).
    assert_same_adapter(fsdp, crossed, atol=1e-6)


@pytest.mark.slow
def test_an_fsdp_launch_on_cpus_is_refused_before_training(
    tiny_lm_path: Path, resume_data: Path, tmp_path: Path
) -> None:
    # accelerate turns FSDP on only over GPUs: on CPUs the trainer says so instead of training unsharded.
    command = trainer("configs/accelerate/fsdp.yaml", resume_data, tiny_lm_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAGTUNE_HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "train_adapter: error: configs/accelerate/fsdp.yaml: accelerate runs FSDP on GPUs only" in done.stderr
    assert not (tmp_path / "adapters").exists() and not (tmp_path / "runs").exists()
