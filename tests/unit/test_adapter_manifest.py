"""An adapter manifest edited by hand with fields of the wrong type: listed as damaged by name, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.adapters import MANIFEST, list_adapters
from ragtune.cli import main

BAD_MANIFESTS = {
    "loss-text": {"files": {}, "metrics": {"train_loss": "oops"}},
    "null": None,
    "method-list": {"files": {}, "method": ["lora"]},
    "metrics-list": {"files": {}, "metrics": [1, 2]},
    "files-text": {"files": "adapter_model.safetensors"},
    "base-number": {"files": {}, "base_model": 7},
    "loss-true": {"files": {}, "metrics": {"train_loss": True}},
}


def write_adapter(home: Path, name: str, manifest: object) -> None:
    folder = home / "adapters" / name
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text(json.dumps(manifest))


def test_wrong_field_types_are_skipped_by_name_and_the_good_one_listed(
    ragtune_home: Path, capsys: pytest.CaptureFixture
) -> None:
    for name, manifest in BAD_MANIFESTS.items():
        write_adapter(ragtune_home, name, manifest)
    write_adapter(ragtune_home, "good", {"files": {}, "method": "lora", "metrics": {"steps": 2, "train_loss": 1.5}})
    assert [a.name for a in list_adapters()] == ["good"]
    err = capsys.readouterr().err
    for name in BAD_MANIFESTS:
        assert f"skipping adapter {name}: adapter {name!r} is damaged" in err
    assert "metrics.train_loss is a string, not a number" in err and "method is a list" in err


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_adapters_list_prints_the_good_one_and_exits_0(
    ragtune_home: Path, capsys: pytest.CaptureFixture, json_flag: list[str]
) -> None:
    for name, manifest in BAD_MANIFESTS.items():
        write_adapter(ragtune_home, name, manifest)
    write_adapter(ragtune_home, "good", {"files": {}, "method": "lora", "metrics": {"steps": 2, "train_loss": 1.5}})
    assert main(["adapters", "list", *json_flag]) == 0
    out = capsys.readouterr().out
    assert "good" in out and "loss-text" not in out and "Traceback" not in out
