"""QLoRA on a tiny LM: a 4-bit NF4 base really trains, its adapter applies to the plain base, refusals come first."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import finetune.qlora
import finetune.train
from finetune.adapters import apply_adapter, read_adapter
from finetune.batches import collate, load_examples
from finetune.train import run_dir, train
from models.config import load_config
from models.errors import ConfigError
from models.loading import load_lm

FACTS = [
    ("What does a non-resident card cost?", "45 dollars per year."),
    ("When does the library open?", "At nine."),
    ("When does the library close?", "At eight."),
    ("How long is a DVD loan?", "Seven days."),
]

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"prompt": q, "completion": a}) + "\n" for q, a in FACTS * 3))
    return path


@pytest.fixture
def config(tiny_lm_path: Path):
    # One batch holds the whole file and dropout is off: each step's loss is over the same tokens, so it
    # must fall at every step when training works.
    return load_config(
        None,
        [
            f"llm.model={tiny_lm_path}",
            "llm.dtype=float32",
            "llm.device=cpu",
            "finetune.method=qlora",
            "finetune.max_steps=6",
            "finetune.batch_size=12",
            "finetune.lr=0.01",
            "finetune.save_every=3",
            "finetune.eval_fraction=0",
            "finetune.lora.dropout=0",
            "finetune.warmup_ratio=0",
        ],
    )


def mean_loss(model, tokenizer, train_file: Path, config) -> float:
    _, examples = load_examples(train_file, tokenizer, config.finetune)
    batch = collate(examples, tokenizer.pad_token_id)
    with torch.no_grad():
        return float(model(**batch).loss)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=GPU)])
def test_qlora_trains_on_a_4bit_base_and_the_adapter_fits_the_plain_base(
    config, train_file: Path, device: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    loaded, real_load = [], finetune.qlora.load_4bit

    def keep_4bit_base(*args, **kwargs):
        loaded.append(real_load(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(finetune.qlora, "load_4bit", keep_4bit_base)
    config = replace(config, llm=replace(config.llm, device=device))
    result = train(config, train_file, "tiny-q", progress=False)

    q_proj = loaded[0].model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, bnb.nn.Linear4bit) and q_proj.base_layer.weight.quant_state.quant_type == "nf4"
    assert result.steps == 6 and all(b < a for a, b in zip(result.losses, result.losses[1:])), result.losses
    plain = load_lm(replace(config.llm, device="cpu"))
    base_params = sum(p.numel() for p in plain.model.parameters())
    assert result.total_params == base_params + result.trainable_params  # 4-bit weights count in full
    manifest = read_adapter("tiny-q").manifest
    assert manifest["method"] == "qlora" and manifest["quantization"]["quant_type"] == "nf4"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        p.name for p in read_adapter("tiny-q").path.iterdir()
    }
    assert not run_dir("tiny-q").exists()

    # The adapter applies to the ordinary float base, as any LoRA adapter does, and lowers its loss there.
    before = mean_loss(plain.model.eval(), plain.tokenizer, train_file, config)
    adapted = apply_adapter(plain.model, plain.path, "tiny-q").eval()
    after = mean_loss(adapted, plain.tokenizer, train_file, config)
    assert after < before - 0.2, (before, after)


def test_resumed_qlora_run_ends_at_the_same_loss_as_an_uninterrupted_one(
    config, train_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("bitsandbytes")
    # Several batches per epoch and dropout on: the replayed data order and RNG state both matter.
    config = replace(
        config, finetune=replace(config.finetune, batch_size=2, lora=replace(config.finetune.lora, dropout=0.1))
    )
    straight = train(config, train_file, "straight", progress=False)
    real_save = finetune.train.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise _Interrupt

    monkeypatch.setattr(finetune.train, "save_checkpoint", save_then_die)
    with pytest.raises(_Interrupt):
        train(config, train_file, "resumed", progress=False)
    monkeypatch.setattr(finetune.train, "save_checkpoint", real_save)
    resumed = train(config, train_file, "resumed", resume=True, progress=False)
    assert resumed.resumed_from == 3 and resumed.losses == pytest.approx(straight.losses, rel=1e-5)


def test_missing_bitsandbytes_names_the_pip_install_before_loading(
    config, train_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import now fails as if it were not installed
    monkeypatch.setattr(finetune.train, "load_base", _no_loading)
    with pytest.raises(
        ConfigError, match=r"finetune.method=qlora needs bitsandbytes.*pip install 'bitsandbytes==0.50.2'"
    ):
        train(config, train_file, "q", progress=False)


def test_a_device_bitsandbytes_cannot_quantise_on_is_refused_naming_the_keys(
    config, train_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bnb = pytest.importorskip("bitsandbytes")

    def no_kernel(*args, **kwargs):
        raise NotImplementedError("no 4-bit kernel for this device")

    monkeypatch.setattr(bnb.functional, "quantize_4bit", no_kernel)
    monkeypatch.setattr(finetune.train, "load_base", _no_loading)
    with pytest.raises(ConfigError) as error:
        train(config, train_file, "q", progress=False)
    message = str(error.value)
    assert "cannot run 4-bit NF4 on llm.device=cpu" in message and "no 4-bit kernel" in message
    assert "CUDA GPU (llm.device=cuda)" in message and "finetune.method=lora" in message


class _Interrupt(Exception):
    """The run dies right after its step-3 checkpoint."""


def _no_loading(*args, **kwargs):
    raise AssertionError("the model was loaded before the qlora check refused the run")


@pytest.mark.slow
def test_qlora_on_the_small_packaged_lm_lowers_the_loss(train_file: Path) -> None:
    pytest.importorskip("bitsandbytes")
    # Six steps, not the LoRA test's eight: enough for the loss to halve, and 4-bit steps are slower on a CPU.
    config = load_config(
        None,
        [
            "llm.model=smollm2-135m-instruct",
            "llm.device=cpu",
            "finetune.method=qlora",
            "finetune.max_steps=6",
            "finetune.batch_size=4",
            "finetune.lr=0.001",
            "finetune.eval_fraction=0",
            "finetune.save_every=100",
            "finetune.warmup_ratio=0",
        ],
    )
    result = train(config, train_file, "smol-q", progress=False)
    first, last = sum(result.losses[:2]) / 2, sum(result.losses[-2:]) / 2
    assert last < 0.8 * first, result.losses
