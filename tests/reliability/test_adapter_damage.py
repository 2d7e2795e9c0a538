"""Damaged or unsafe adapters: refused by name, never a traceback, never hiding the healthy ones."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from finetune.adapters import MANIFEST, base_fingerprint, list_adapters, read_adapter, save_adapter
from models.answer import text_of
from models.config import load_config
from models.errors import AdapterError
from models.generate import SamplingParams, load_language_model
from models.storage import describe_files
from ragtune.cli import main
from ragtune.serve.background import running
from ragtune.serve.engine import Engine
from ragtune.serve.routes import create_app

KEY = "test-key-" + "y" * 24


def make_adapter(base: Path, name: str, seed: int = 0) -> Path:
    """A real LoRA adapter (random weights) saved as `ragtune train` saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    manifest = {"method": "lora", "base_model": str(base), "base_fingerprint": base_fingerprint(base), "metrics": {}}
    return save_adapter(peft, name, manifest)


def rewrite_manifest(folder: Path, **changes) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest.update(changes)
    names = [n for n in manifest["files"]]
    manifest["files"] = describe_files(folder, names)  # sizes and hashes agree: only the content is wrong
    (folder / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture
def adapters(tiny_lm_path: Path) -> dict[str, Path]:
    folders = {name: make_adapter(tiny_lm_path, name, i) for i, name in enumerate(("good", "fake", "nullmetrics"))}
    (folders["fake"] / "adapter_model.safetensors").write_bytes(b"PK\x03\x04 this is a zip, not safetensors")
    rewrite_manifest(folders["fake"])
    rewrite_manifest(folders["nullmetrics"], metrics=None)
    pickled = make_adapter(tiny_lm_path, "pickled", 5)
    (pickled / "extra.bin").write_bytes(b"\x80\x04 pickle")
    folders["pickled"] = pickled
    return folders


def test_listing_skips_each_bad_adapter_by_name_and_keeps_the_good(adapters, capsys) -> None:
    assert [a.name for a in list_adapters()] == ["good"]
    err = capsys.readouterr().err
    assert "skipping adapter fake: adapter 'fake' is damaged" in err and "not a readable safetensors" in err
    assert "skipping adapter nullmetrics" in err and "malformed" in err
    assert "skipping adapter pickled" in err and "pickle files (extra.bin)" in err


def test_cli_lists_the_good_and_refuses_the_fake_in_one_line(adapters, tiny_lm_path: Path, capsys) -> None:
    assert main(["adapters", "list"]) == 0
    out = capsys.readouterr().out
    assert "good" in out and "fake" not in out
    settings = [f"llm.model={tiny_lm_path}", "llm.dtype=float32", "mode=finetune", "finetune.adapter=fake"]
    code = main(["ask", *[a for s in settings for a in ("--set", s)], "Hello?"])
    err = capsys.readouterr().err
    assert code == 2 and "not a readable safetensors" in err and "Traceback" not in err


def test_server_answers_503_for_a_damaged_adapter_and_the_base_is_untouched(
    adapters, tiny_lm_path: Path, embedder
) -> None:
    config = load_config(None, [f"llm.model={tiny_lm_path}", "llm.dtype=float32", "llm.max_new_tokens=6"])
    engine = Engine(config, embedder=embedder, lm=load_language_model(config.llm, progress=False))
    params = SamplingParams(max_new_tokens=6)
    messages = [{"role": "user", "content": "Hello?"}]
    before = "".join(text_of(engine.reply("base", messages, params)))
    weights = adapters["good"] / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)  # same size, different bytes
    with running(create_app(engine, KEY)) as url:
        models = httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()
        assert [m["id"] for m in models["data"]] == ["base", "rag", "finetune:good", "hybrid:good"]
        body = {"model": "finetune:good", "messages": messages, "max_tokens": 4}
        response = httpx.post(
            url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
        )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "adapter_unavailable"
    assert "does not match the sha256" in response.json()["error"]["message"]
    assert "".join(text_of(engine.reply("base", messages, params))) == before  # no adapter state was left behind
    with pytest.raises(AdapterError):
        read_adapter("good")


def test_a_damaged_adapter_can_still_be_removed(adapters, capsys) -> None:
    assert main(["adapters", "rm", "fake"]) == 0
    assert not adapters["fake"].exists()
