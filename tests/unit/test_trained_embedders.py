"""Trained embedders on disk: publish, verified lookup, listing, removal, export, and the `ragtune embedders` CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from finetune.embedder_store import export_trained_embedder, publish_embedder, remove_trained_embedder
from models.errors import InputError, ModelError
from models.loading import embedder_folder
from models.storage import file_lock
from models.trained_embedders import (
    MANIFEST,
    check_embedder_name,
    embedder_fingerprint,
    find_trained_embedder,
    list_trained_embedders,
    publish_lock,
    read_embedder_manifest,
    read_trained_embedder,
    trained_embedder_path,
)
from ragtune.cli import main

TEXTS = ["The library opens at nine.", "A non-resident card costs forty-five dollars per year.", "x"]
FIELDS = {
    "base": "minilm-l6",
    "base_fingerprint": "0123456789abcdef",
    "data": {"docs": "/docs", "chunks": 12, "sha256": "ab" * 32},
    "queries": {"method": "heuristic"},
    "steps": 40,
    "seconds": 3.5,
    "peak_rss_mb": 900.0,
    "seed": 0,
    "settings": {"lr": 2e-5, "batch_size": 8},
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.tiny import build_tiny_embedder

    return build_tiny_embedder(tmp_path_factory.mktemp("tiny-embedder"))


def load(folder: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", local_files_only=True, trust_remote_code=False)


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_publish_find_list_show(tiny_model: Any, capsys: pytest.CaptureFixture) -> None:
    folder = publish_embedder(tiny_model, "library-minilm", FIELDS)
    assert folder == trained_embedder_path("library-minilm") and folder.parent.name == "embedders"
    assert find_trained_embedder("library-minilm") == folder
    manifest = read_embedder_manifest(folder)
    assert {k: manifest[k] for k in FIELDS} == FIELDS and manifest["name"] == "library-minilm"
    assert "model.safetensors" in manifest["files"] and "modules.json" in manifest["files"]
    assert "1_Pooling/config.json" in manifest["files"]  # the modules' own folders are listed too
    assert not any(Path(name).suffix in (".bin", ".pt") for name in manifest["files"])
    assert manifest["created"].endswith("Z") and manifest["format"]
    assert np.allclose(load(folder).encode(TEXTS), tiny_model.encode(TEXTS), atol=1e-6)
    fingerprint = embedder_fingerprint(folder)
    assert len(fingerprint) == 16 and fingerprint == embedder_fingerprint(folder)
    [listed] = list_trained_embedders()
    assert (listed.name, listed.path, listed.problem) == ("library-minilm", folder, None)
    assert main(["embedders", "show", "library-minilm"]) == 0
    assert json.loads(capsys.readouterr().out) == manifest


def test_a_name_that_is_no_trained_embedder_is_none(ragtune_home: Path) -> None:
    (ragtune_home / "embedders" / "minilm-l6").mkdir(parents=True)  # made by hand: the preset still wins
    for model in ("minilm-l6", "nothing-here", "/some/folder", "../x", "", "a.b"):
        assert find_trained_embedder(model) is None


def test_replacing_keeps_one_folder_and_changes_the_fingerprint(tiny_model: Any, ragtune_home: Path) -> None:
    import torch

    first = publish_embedder(tiny_model, "lib", FIELDS)
    before = embedder_fingerprint(first)
    changed = load(first)
    with torch.no_grad():
        next(changed.parameters()).add_(0.01)
    assert publish_embedder(changed, "lib", {**FIELDS, "steps": 80}) == first
    assert read_embedder_manifest(first)["steps"] == 80 and embedder_fingerprint(first) != before
    left = sorted(p.name for p in (ragtune_home / "embedders").iterdir())
    assert left == [".lib.lock", "lib"]  # no old folder, no staging folder


def test_no_model_card_is_written(tiny_model: Any) -> None:
    # A model card can quote training data; an exported embedder must not carry the documents.
    folder = publish_embedder(tiny_model, "lib", FIELDS)
    assert "README.md" not in read_embedder_manifest(folder)["files"] and not (folder / "README.md").exists()


def test_a_damaged_weight_file_is_refused_with_the_fix(tiny_model: Any, capsys: pytest.CaptureFixture) -> None:
    folder = publish_embedder(tiny_model, "lib", FIELDS)
    flip_a_byte(folder / "model.safetensors")  # same size: only the hash tells
    with pytest.raises(ModelError, match=r"damaged: .*model\.safetensors does not match the sha256") as caught:
        find_trained_embedder("lib")
    assert "`ragtune embedders rm lib` and train it again" in str(caught.value) and str(folder) in str(caught.value)
    assert main(["embedders", "show", "lib"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ragtune embedders rm lib" in err and "Traceback" not in err


def test_a_missing_file_or_manifest_is_damage(tiny_model: Any) -> None:
    folder = publish_embedder(tiny_model, "lib", FIELDS)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match=r"tokenizer\.json is missing.*ragtune embedders rm lib"):
        find_trained_embedder("lib")
    (folder / MANIFEST).unlink()
    with pytest.raises(ModelError, match=r"ragtune-embedder\.json is missing.*ragtune embedders rm lib"):
        find_trained_embedder("lib")


def test_a_file_the_manifest_does_not_list_is_refused(tiny_model: Any) -> None:
    folder = publish_embedder(tiny_model, "lib", FIELDS)
    (folder / "added_tokens.json").write_text("{}")
    with pytest.raises(ModelError, match=r"does not list \(added_tokens\.json\)"):
        find_trained_embedder("lib")


def test_damaged_ones_are_listed_with_their_problem(
    tiny_model: Any, ragtune_home: Path, capsys: pytest.CaptureFixture
) -> None:
    publish_embedder(tiny_model, "good", FIELDS)
    truncated = publish_embedder(tiny_model, "truncated", FIELDS)
    with open(truncated / "model.safetensors", "r+b") as handle:
        handle.truncate(100)
    wrong_types = publish_embedder(tiny_model, "wrong-types", FIELDS)
    manifest = read_embedder_manifest(wrong_types)
    (wrong_types / MANIFEST).write_text(json.dumps({**manifest, "steps": "many", "data": [1]}))
    (ragtune_home / "embedders" / "empty").mkdir()
    found = {e.name: e.problem for e in list_trained_embedders()}
    assert list(found) == ["empty", "good", "truncated", "wrong-types"] and found["good"] is None
    assert "ragtune-embedder.json is missing" in found["empty"]
    assert "model.safetensors is 100 bytes" in found["truncated"]
    assert "is malformed (" in found["wrong-types"]
    assert main(["embedders", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and "DAMAGED" in lines[2] and "ragtune embedders rm truncated" in lines[2]
    assert "base=minilm-l6 queries=heuristic chunks=12 steps=40 created=" in lines[1]
    assert main(["embedders", "list", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["good"]["problem"] is None and rows["good"]["steps"] == 40 and rows["empty"]["problem"]


def test_preset_names_are_refused(tiny_model: Any) -> None:
    for name in ("minilm-l6", "MiniLM-L6", "smollm2-135m-instruct"):
        with pytest.raises(InputError, match=rf"{name!r} collides with the packaged model.*such as {name}-tuned"):
            check_embedder_name(name)
    with pytest.raises(InputError, match="collides"):
        publish_embedder(tiny_model, "minilm-l6", FIELDS)
    assert check_embedder_name("minilm-l6-tuned") == "minilm-l6-tuned"


@pytest.mark.parametrize("name", ["../x", "a b", "", ".hidden", "x.y", "-x", "a/b", "x" * 101])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InputError, match="should be a plain name of letters, digits"):
        check_embedder_name(name)


def test_pickle_files_are_refused(tiny_model: Any) -> None:
    folder = publish_embedder(tiny_model, "lib", FIELDS)
    (folder / "1_Pooling" / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelError, match=r"holds pickle files \(1_Pooling/pytorch_model\.bin\).*safetensors only"):
        find_trained_embedder("lib")


class PickleSaver:
    """A model whose save writes the unsafe way, as a module without safetensors support does."""

    def save(self, path: str, create_model_card: bool = True, safe_serialization: bool = True) -> None:
        Path(path, "pytorch_model.bin").write_bytes(b"\x80\x04")


def test_a_model_that_saves_pickles_is_not_published(ragtune_home: Path) -> None:
    with pytest.raises(ModelError, match=r"wrote pytorch_model\.bin.*safetensors only"):
        publish_embedder(PickleSaver(), "lib", FIELDS)
    assert not any((ragtune_home / "embedders").iterdir())  # the staging folder went with it


def test_export_loads_as_a_plain_folder_with_the_same_vectors(tiny_model: Any, tmp_path: Path) -> None:
    stored = publish_embedder(tiny_model, "lib", FIELDS)
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (tmp_path / "new" / "lib-export", empty):
        assert export_trained_embedder("lib", out) == out.resolve()
        assert not (out / MANIFEST).exists() and (out / "1_Pooling" / "config.json").is_file()
        assert np.allclose(load(out).encode(TEXTS), load(stored).encode(TEXTS), atol=1e-6)
        assert embedder_folder(str(out)) == out  # as embedder.model=OUT: a local path
    assert not list(tmp_path.glob("new/.*.partial"))


def test_export_refuses_a_folder_that_is_not_empty(tiny_model: Any, tmp_path: Path) -> None:
    publish_embedder(tiny_model, "lib", FIELDS)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="exists and is not an empty folder"):
        export_trained_embedder("lib", out)
    with pytest.raises(InputError, match="exists and is not an empty folder"):
        export_trained_embedder("lib", out / "keep.txt")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_export_refuses_a_damaged_embedder(tiny_model: Any, tmp_path: Path) -> None:
    folder = publish_embedder(tiny_model, "lib", FIELDS)
    flip_a_byte(folder / "model.safetensors")
    with pytest.raises(ModelError, match="damaged"):
        export_trained_embedder("lib", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_remove_clears_even_a_damaged_one(tiny_model: Any, ragtune_home: Path) -> None:
    folder = publish_embedder(tiny_model, "lib", FIELDS)
    publish_embedder(tiny_model, "other", FIELDS)
    flip_a_byte(folder / "model.safetensors")
    assert remove_trained_embedder("lib") == folder and not folder.exists()
    assert sorted(p.name for p in (ragtune_home / "embedders").iterdir() if p.is_dir()) == ["other"]
    with pytest.raises(InputError, match=r"no trained embedder named 'lib' .*\(known: other\)"):
        remove_trained_embedder("lib")
    with pytest.raises(InputError, match=r"packaged model, not a trained one"):
        read_trained_embedder("minilm-l6")


def test_a_crash_while_replacing_leaves_the_old_one_usable(tiny_model: Any) -> None:
    folder = publish_embedder(tiny_model, "lib", FIELDS)
    moved_aside = folder.with_name(".lib.replaced")
    os.rename(folder, moved_aside)  # where publish_dir puts the old folder before the new one takes the name
    assert [e.name for e in list_trained_embedders()] == ["lib"]
    assert folder.is_dir() and not moved_aside.exists()
    os.rename(folder, moved_aside)
    with file_lock(publish_lock("lib")):  # a writer replacing it now: its old folder stays aside
        assert find_trained_embedder("lib") is None and moved_aside.is_dir()
    assert find_trained_embedder("lib") == folder


def test_cli_rm_export_and_bad_names(tiny_model: Any, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["embedders", "list"]) == 0
    assert "no trained embedders yet; train one with `ragtune train --target embedder" in capsys.readouterr().out
    publish_embedder(tiny_model, "lib", FIELDS)
    out = tmp_path / "exported"
    assert main(["embedders", "export", "lib", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"exported {out}" in printed and f"use it: --set embedder.model={out}" in printed
    assert main(["embedders", "export", "lib", "--out", str(out)]) == 2
    assert "is not an empty folder" in capsys.readouterr().err
    for argv in (["show", "../x"], ["rm", "a b"], ["export", "x.y", "--out", str(tmp_path / "o")]):
        assert main(["embedders", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ragtune: error: embedder name") and err.count("\n") == 1 and "Traceback" not in err
    assert main(["embedders", "show", "missing"]) == 2
    assert "no trained embedder named 'missing'" in capsys.readouterr().err
    assert main(["embedders", "rm", "lib"]) == 0
    assert "removed" in capsys.readouterr().out and find_trained_embedder("lib") is None
