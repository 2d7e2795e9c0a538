"""LoRA and full fine-tuning on a tiny LM: save/reload, resume, merge, refusals, several processes."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from finetune.adapters import apply_adapter, list_adapters, merge_adapter, read_adapter
from finetune.train import TrainingError, run_dir, train
from models.config import load_config
from models.errors import ConfigError, ModelError
from models.loading import load_lm
from tests.conftest import REPO

FACTS = [
    ("What does a non-resident card cost?", "45 dollars per year."),
    ("When does the library open?", "At nine."),
    ("When does the library close?", "At eight."),
    ("How long is a DVD loan?", "Seven days."),
    ("How many renewals are allowed?", "Three."),
    ("What is the late fee?", "25 cents a day."),
]


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"prompt": q, "completion": a}) + "\n" for q, a in FACTS * 2))
    return path


@pytest.fixture
def config(tiny_lm_path: Path):
    # lr 0.01: large enough that a tiny random model's loss visibly falls in six steps.
    return load_config(
        None,
        [
            f"llm.model={tiny_lm_path}",
            "llm.dtype=float32",
            "llm.device=cpu",
            "finetune.max_steps=6",
            "finetune.batch_size=2",
            "finetune.lr=0.01",
            "finetune.save_every=3",
            "finetune.eval_fraction=0.2",
            "finetune.lora.dropout=0.1",
            "finetune.warmup_ratio=0",
        ],
    )


def logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer("When does the library open?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_lora_trains_saves_and_reloads_to_the_same_logits(config, train_file: Path) -> None:
    result = train(config, train_file, "tiny-v1", progress=False)
    assert result.steps == 6 and result.losses[-1] < result.losses[0]
    assert result.eval_loss is not None and 0 < result.trainable_params < result.total_params
    folder = read_adapter("tiny-v1").path
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in folder.iterdir()}
    manifest = read_adapter("tiny-v1").manifest
    assert manifest["data"]["format"] == "prompt_completion" and manifest["method"] == "lora"
    assert not run_dir("tiny-v1").exists()  # checkpoints are dropped once the adapter is saved

    # Plain PEFT loads it (no ragtune code) and gives the same logits as ragtune's loader.
    from peft import PeftModel

    lm = load_lm(config.llm)
    plain = PeftModel.from_pretrained(load_lm(config.llm).model, str(folder)).eval()
    ours = apply_adapter(lm.model, lm.path, "tiny-v1").eval()
    base = load_lm(config.llm).model.eval()
    assert torch.allclose(logits(plain, lm.tokenizer), logits(ours, lm.tokenizer), atol=1e-6)
    assert not torch.allclose(logits(base, lm.tokenizer), logits(ours, lm.tokenizer), atol=1e-4)

    merged = merge_adapter(apply_adapter(load_lm(config.llm).model, lm.path, "tiny-v1").eval())
    assert torch.allclose(logits(merged, lm.tokenizer), logits(ours, lm.tokenizer), atol=1e-4)
    assert [a.name for a in list_adapters()] == ["tiny-v1"]


def test_resumed_run_ends_at_the_same_loss_as_an_uninterrupted_one(config, train_file: Path) -> None:
    straight = train(config, train_file, "straight", progress=False)
    with pytest.raises(_Interrupt):
        _train_until_checkpoint(config, train_file)
    assert (run_dir("resumed") / "checkpoint-000003").is_dir()
    with pytest.raises(TrainingError, match="pass --resume"):
        train(config, train_file, "resumed", progress=False)
    resumed = train(config, train_file, "resumed", resume=True, progress=False)
    assert resumed.resumed_from == 3 and resumed.steps == 6
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-5)


class _Interrupt(Exception):
    pass


def _train_until_checkpoint(config, train_file: Path) -> None:
    """Run the 6-step schedule but die right after the step-3 checkpoint is written."""
    import finetune.train as module

    real = module.save_checkpoint

    def save_then_die(*args, **kwargs):
        real(*args, **kwargs)
        raise _Interrupt()

    module.save_checkpoint = save_then_die
    try:
        train(config, train_file, "resumed", progress=False)
    finally:
        module.save_checkpoint = real


def test_nan_loss_stops_with_a_clear_error(config, train_file: Path) -> None:
    bad = replace(config, finetune=replace(config.finetune, lr=1e30, max_steps=6, save_every=100))
    with pytest.raises(TrainingError, match="the loss became nan.*lower finetune.lr"):
        train(bad, train_file, "diverged", progress=False)
    assert "diverged" not in [a.name for a in list_adapters()]


def test_full_fine_tuning_writes_a_whole_model(config, train_file: Path) -> None:
    full = replace(config, finetune=replace(config.finetune, method="full", max_steps=2, lr=1e-3))
    result = train(full, train_file, "tiny-full", progress=False)
    assert result.trainable_params == result.total_params
    folder = read_adapter("tiny-full").path
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()


def test_pickle_files_and_base_mismatch_are_refused(config, train_file: Path, tmp_path: Path) -> None:
    train(config, train_file, "tiny-v2", progress=False)
    folder = read_adapter("tiny-v2").path
    other = tmp_path / "other-base"
    from tests.tiny import build_tiny_lm

    build_tiny_lm(other, seed=1)
    lm = load_lm(replace(config.llm, model=str(other)))
    with pytest.raises(ModelError, match="was trained on base model .* retrain the adapter"):
        apply_adapter(lm.model, lm.path, "tiny-v2")
    (folder / "adapter_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(ModelError, match="pickle files \\(adapter_model.bin\\)"):
        read_adapter("tiny-v2")


@pytest.mark.slow
def test_two_processes_under_accelerate_give_one_adapter(
    config, train_file: Path, tiny_lm_path: Path, ragtune_home: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAGTUNE_HOME": str(ragtune_home), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--cpu",
        str(REPO / "scripts" / "train_adapter.py"),
        "--data",
        str(train_file),
        "--name",
        "ddp",
        "--set",
        f"llm.model={tiny_lm_path}",
        "--set",
        "llm.dtype=float32",
        "--set",
        "llm.device=cpu",
        "--set",
        "finetune.max_steps=2",
        "--set",
        "finetune.batch_size=2",
    ]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [a.name for a in list_adapters()] == ["ddp"]
    assert read_adapter("ddp").manifest["metrics"]["steps"] == 2


def test_finetune_and_hybrid_modes_answer_with_the_adapter(config, train_file: Path, docs: Path, embedder) -> None:
    from models.answer import answer as answer_with
    from rag.ingest import ingest
    from ragtune.closed_book import ClosedBookAnswerer
    from ragtune.compose import build_answerer

    train(config, train_file, "tiny-modes", progress=False)
    closed = replace(config, mode="finetune", finetune=replace(config.finetune, adapter="tiny-modes"))
    answerer = build_answerer(closed, embedder=embedder)
    assert isinstance(answerer, ClosedBookAnswerer)
    answer = answer_with(answerer, "When does the library open?")
    assert answer.sources == [] and answer.usage is not None and "+tiny-modes" in answerer.generator.name
    ingest([docs], closed, embedder)
    hybrid = replace(closed, mode="hybrid")
    answer = answer_with(build_answerer(hybrid, embedder=embedder), "How long can I borrow a DVD?")
    assert Path(answer.sources[0].path).name == "borrowing-rules.txt"
    missing = replace(closed, finetune=replace(closed.finetune, adapter=None))
    with pytest.raises(ConfigError, match="mode=finetune needs finetune.adapter=NAME"):
        build_answerer(missing, embedder=embedder)
    unknown = replace(closed, finetune=replace(closed.finetune, adapter="nope"))
    from models.errors import InputError

    with pytest.raises(InputError, match="no adapter named 'nope'.*known: tiny-modes"):
        build_answerer(unknown, embedder=embedder)


@pytest.mark.slow
def test_lora_on_the_small_packaged_lm_lowers_the_loss(train_file: Path) -> None:
    config = load_config(
        None,
        [
            "llm.model=smollm2-135m-instruct",
            "llm.device=cpu",
            "finetune.max_steps=8",
            "finetune.batch_size=4",
            "finetune.lr=0.001",
            "finetune.eval_fraction=0",
            "finetune.save_every=100",
            "finetune.warmup_ratio=0",
        ],
    )
    result = train(config, train_file, "smol-facts", progress=False)
    first, last = sum(result.losses[:2]) / 2, sum(result.losses[-2:]) / 2
    assert last < 0.8 * first, result.losses
