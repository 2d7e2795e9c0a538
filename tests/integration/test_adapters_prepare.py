"""`ragtune adapters prepare`: an adapter's GGUF LoRA is written there (or at training), never while answering."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from finetune.adapters import MANIFEST, usable_adapter
from finetune.gguf_export import prepare_adapter
from models.errors import AdapterError
from models.gguf.lora import GGUF_LORA_FILE
from models.paths import adapters_dir
from models.presets import PRESETS, piece_paths
from ragtune.cli import main

SMOL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def peft_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PEFT LoRA on SmolLM2 saved without its GGUF LoRA, as adapters were before llama.cpp ran them."""
    from tests.gguf_lora_helpers import random_lora_folder

    return random_lora_folder(tmp_path_factory.mktemp("peft") / "older", SMOL, seed=0)


@pytest.fixture
def older(peft_folder: Path) -> str:
    shutil.copytree(peft_folder, adapters_dir() / peft_folder.name)
    return peft_folder.name


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root`, hidden ones (staging folders, lock files) included, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_prepare_converts_once_then_leaves_the_adapter_as_it_is(older: str) -> None:
    notes: list[str] = []
    done = prepare_adapter(older, "qwen2.5-coder-0.5b-instruct", note=notes.append)  # the manifest's base wins
    assert done.converted and done.model == SMOL and done.base == piece_paths(PRESETS[SMOL])[0]
    assert notes == [f"converting adapter {older!r} to a GGUF LoRA for {done.base.name} ..."]
    manifest = json.loads((done.info.path / MANIFEST).read_text())
    assert GGUF_LORA_FILE in manifest["files"] and manifest["gguf_lora"]["base_sha256"] == PRESETS[SMOL].sha256
    before = snapshot(adapters_dir())
    again = prepare_adapter(older, SMOL, note=notes.append)
    assert not again.converted and len(notes) == 1 and snapshot(adapters_dir()) == before
    assert usable_adapter(older, done.base).manifest["files"] == manifest["files"]


def test_answering_with_an_unprepared_adapter_names_the_command_and_writes_nothing(older: str) -> None:
    base = piece_paths(PRESETS[SMOL])[0]
    before = snapshot(adapters_dir())
    with pytest.raises(AdapterError, match=rf"run `ragtune adapters prepare {older}`") as refused:
        usable_adapter(older, base, PRESETS[SMOL].sha256)
    assert "\n" not in str(refused.value) and snapshot(adapters_dir()) == before


def test_ask_on_llama_cpp_with_an_unprepared_adapter_is_one_error_line(
    older: str, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("llama_cpp")
    before = snapshot(adapters_dir())
    sets = [f"llm.model={SMOL}", "llm.backend=llamacpp", "llm.context_window=256", "mode=finetune"]
    sets.append(f"finetune.adapter={older}")
    code, out, err = run(capsys, "ask", *[a for s in sets for a in ("--set", s)], "What is a library card?")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and f"run `ragtune adapters prepare {older}`" in err
    assert snapshot(adapters_dir()) == before


def test_cli_prepare_says_what_it_converts_and_is_idempotent(older: str, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run(capsys, "adapters", "prepare", older)
    assert code == 0 and f"converting adapter {older!r} to a GGUF LoRA" in err
    assert f"adapter {older}: converted, verified for" in out and f"llm.model={SMOL}" in out
    code, out, err = run(capsys, "adapters", "prepare", older)
    assert code == 0 and err == "" and f"adapter {older}: already had its GGUF LoRA" in out


def test_prepare_refuses_an_adapter_with_no_gguf_base_by_name(older: str, tmp_path: Path) -> None:
    manifest_path = adapters_dir() / older / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "base_model": str(tmp_path / "hf-folder")}))
    with pytest.raises(AdapterError, match=rf"adapter '{older}' was trained on .*hf-folder.* neither a GGUF model"):
        prepare_adapter(older, str(tmp_path / "other-folder"))
    assert not (adapters_dir() / older / GGUF_LORA_FILE).exists()


def test_cli_prepare_of_an_unknown_adapter_is_one_error_line(capsys: pytest.CaptureFixture) -> None:
    code, out, err = run(capsys, "adapters", "prepare", "NOPE")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no adapter named 'NOPE'" in err


def test_adapters_help_teaches_when_to_prepare(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        main(["adapters", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    assert done.value.code == 0
    assert "prepare" in out and "write the GGUF LoRA llama.cpp needs" in out and "saved without one" in out
