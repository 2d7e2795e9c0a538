"""configs/accelerate/: accelerate itself reads each shipped config and knows each of its keys (no GPU needed)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from models.config import FinetuneConfig
from models.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))


def test_each_way_to_spread_training_has_a_config() -> None:
    assert [p.stem for p in CONFIGS] == ["ddp", "fsdp", "zero2", "zero3"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_accelerate_reads_the_config_and_knows_every_key(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    monkeypatch.chdir(REPO)  # the DeepSpeed configs name their JSON relative to the repository root
    assert path.read_text().startswith("# ")  # the header that says when to pick it
    config = load_config_from_file(str(path))  # an unknown top-level key raises here
    args = launch_command_parser().parse_args(["--config_file", str(path), "scripts/train_adapter.py"])
    options = set(vars(args))
    # accelerate copies these sections' keys onto its launch options without checking them: check them here.
    nested = [*config.deepspeed_config, *(k if k.startswith("fsdp_") else f"fsdp_{k}" for k in config.fsdp_config)]
    assert nested or path.stem == "ddp"
    assert [key for key in nested if key not in options] == []
    args, _, _ = _validate_launch_command(args)
    assert args.num_processes == 2 and args.num_machines == 1
    assert [args.multi_gpu, args.use_deepspeed, args.use_fsdp].count(True) == 1


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_json_matches_what_the_trainer_passes(stage: int) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    yaml_path = REPO / "configs" / "accelerate" / f"zero{stage}.yaml"
    json_path = REPO / load_config_from_file(str(yaml_path)).deepspeed_config["deepspeed_config_file"]
    settings = json.loads(json_path.read_text())
    assert settings["zero_optimization"]["stage"] == stage
    # accelerate refuses, in every process, a mixed_precision in the YAML next to a DeepSpeed JSON (precision
    # comes from the JSON's "bf16", filled from --mixed_precision on the command line).
    assert "mixed_precision" not in yaml.safe_load(yaml_path.read_text())
    # The trainer feeds its own micro-batches (no DataLoader for accelerate to read the size from) and
    # accumulates nothing under DeepSpeed (the config headers ask for finetune.grad_accum=1).
    assert settings["train_micro_batch_size_per_gpu"] == FinetuneConfig().batch_size
    assert settings["gradient_accumulation_steps"] == 1


@pytest.mark.parametrize("stage", [2, 3])
def test_the_shipped_deepspeed_json_passes_the_trainers_checks(stage: int) -> None:
    from finetune.strategy import check_deepspeed

    settings = json.loads((REPO / "configs" / "accelerate" / f"zero{stage}.json").read_text())
    check_deepspeed(settings, FinetuneConfig())  # raises a ConfigError on a mismatch
    with pytest.raises(ConfigError, match="finetune.batch_size=8 differs from train_micro_batch_size_per_gpu=4"):
        check_deepspeed(settings, FinetuneConfig(batch_size=8))
    with pytest.raises(ConfigError, match="finetune.grad_accum=2: under DeepSpeed set finetune.grad_accum=1"):
        check_deepspeed(settings, FinetuneConfig(grad_accum=2))
    with pytest.raises(ConfigError, match="gradient_accumulation_steps is 4; set it to 1"):
        check_deepspeed({**settings, "gradient_accumulation_steps": 4}, FinetuneConfig())


def test_fsdp_that_accelerate_did_not_turn_on_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from accelerate.utils import DistributedType

    from finetune.strategy import check_strategy

    # What `accelerate launch --config_file configs/accelerate/fsdp.yaml` exports; on CPUs accelerate then
    # falls back to DDP (MULTI_CPU). check_strategy reads only distributed_type off the Accelerator here.
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    for kind in (DistributedType.MULTI_CPU, DistributedType.NO):
        with pytest.raises(ConfigError, match=r"accelerate runs FSDP on GPUs only.*configs/accelerate/ddp.yaml"):
            check_strategy(SimpleNamespace(distributed_type=kind), FinetuneConfig())
    check_strategy(SimpleNamespace(distributed_type=DistributedType.FSDP), FinetuneConfig(save_every=1))
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    check_strategy(SimpleNamespace(distributed_type=DistributedType.MULTI_CPU), FinetuneConfig(grad_accum=4))
