"""`ragtune adapters export NAME --for vllm -o DIR`: the PEFT folder vLLM loads, and the command that serves it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.adapters import base_fingerprint, save_adapter
from models.storage import sha256_file
from ragtune.cli import main


def make_adapter(base: Path, name: str, rank: int = 4, **lora: object) -> Path:
    """A random LoRA over the tiny LM, saved where `ragtune train` saves adapters (with its manifest)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(rank)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=rank, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False, **lora)
    manifest = {"method": "lora", "base_model": str(base), "base_fingerprint": base_fingerprint(base), "metrics": {}}
    return save_adapter(get_peft_model(model, config), name, manifest)


def export(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(["adapters", "export", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_export_is_the_adapter_vllm_loads_and_the_command_serves_it(
    tiny_lm_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    source = make_adapter(tiny_lm_path, "library-v1")
    out = tmp_path / "for-vllm"
    code, printed, err = export(capsys, "library-v1", "--for", "vllm", "-o", str(out))
    assert code == 0, err
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_lm_path) and config["peft_type"] == "LORA"
    assert sha256_file(out / "adapter_model.safetensors") == sha256_file(source / "adapter_model.safetensors")
    assert f"serve it: vllm serve {tiny_lm_path} --enable-lora --lora-modules library-v1={out}\n" in printed
    assert not any(p.suffix in (".bin", ".pt") for p in out.iterdir())

    # The folder is a plain PEFT adapter: it gives the base the same answers as the adapter it came from.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 17, 42, 99, 3]])
    logits = []
    for folder in (source, out):
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm_path), str(folder))
        with torch.no_grad():
            logits.append(model(input_ids=ids).logits)
    assert torch.equal(logits[0], logits[1])


def test_base_rank_and_what_vllm_cannot_serve(
    tiny_lm_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    make_adapter(tiny_lm_path, "wide", rank=32)
    out = tmp_path / "wide"
    code, printed, _ = export(capsys, "wide", "--for", "vllm", "--base", "Org/Base-1B", "-o", str(out))
    assert code == 0
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "Org/Base-1B"
    assert f"vllm serve Org/Base-1B --enable-lora --lora-modules wide={out} --max-lora-rank 32" in printed

    code, _, err = export(capsys, "wide", "--for", "vllm", "-o", str(out))
    assert code == 2 and "exists and is not an empty folder" in err
    make_adapter(tiny_lm_path, "dora", use_dora=True)
    code, _, err = export(capsys, "dora", "--for", "vllm", "-o", str(tmp_path / "dora"))
    assert code == 2 and "uses DoRA, which vLLM does not serve" in err and not (tmp_path / "dora").exists()
    with pytest.raises(SystemExit):  # one way to export at a time
        main(["adapters", "export", "wide", "--merge", "--for", "vllm", "-o", str(tmp_path / "both")])
