"""`ragtune bundle --embedder NAME`: a trained embedder copied into the bundle, locked, verified, installed far away."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from finetune.embedder_store import publish_embedder
from models.errors import InputError, ModelError
from models.storage import sha256_file
from models.trained_embedders import MANIFEST, folder_files, read_trained_embedder
from ragtune.bundle import verify
from ragtune.bundle.build import BundleResult, _lock
from ragtune.bundle.embedders import carry_embedders, check_embedders, install_embedders
from ragtune.bundle.plan import Plan, python_info
from ragtune.bundle.sbom import make_sbom
from ragtune.cli import main
from tests.unit.test_bundle_verify import write_bundle

NAME = "library-minilm"
FIELDS = {"base": "minilm-l6", "data": {"docs": "/docs", "chunks": 12}, "queries": {"method": "heuristic"}, "steps": 40}
TEXTS = ["The library opens at nine.", "A non-resident card costs forty-five dollars per year."]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.tiny import build_tiny_embedder

    return build_tiny_embedder(tmp_path_factory.mktemp("tiny-embedder"))


def publish(model: Any, steps: int = 40) -> Path:
    return publish_embedder(model, NAME, {**FIELDS, "steps": steps})


def mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def carried_bundle(folder: Path, names: list[str]) -> dict:
    """A bundle of one small wheel that also carries the trained embedders `names`, as build.py lays it out."""
    lock = write_bundle(folder, [("alpha", "1.0", "py3-none-any", "software")])
    lock["embedders"], _ = carry_embedders(check_embedders(names), folder)
    (folder / verify.LOCK).write_text(json.dumps(lock), encoding="utf-8")
    return lock


def test_an_embedder_is_copied_file_by_file_and_each_file_is_locked(tiny_model: Any, tmp_path: Path) -> None:
    stored = publish(tiny_model)
    out = tmp_path / "bundle"
    [entry], written = carry_embedders(check_embedders([NAME, NAME]), out)
    copy = out / "embedders" / NAME
    assert folder_files(copy) == folder_files(stored) and MANIFEST in folder_files(copy)
    assert (copy / MANIFEST).read_bytes() == (stored / MANIFEST).read_bytes()
    assert (entry["name"], entry["path"], entry["base"]) == (NAME, f"embedders/{NAME}", "minilm-l6")
    assert sorted(f["path"] for f in entry["files"]) == [f"embedders/{NAME}/{n}" for n in folder_files(stored)]
    for file in entry["files"]:
        assert (file["size"], file["sha256"]) == ((out / file["path"]).stat().st_size, sha256_file(out / file["path"]))
    assert sorted(written) == sorted(f["path"] for f in entry["files"])

    # Nothing changed: nothing is rewritten, and the lock entry is the same.
    before = mtimes(out)
    assert carry_embedders(check_embedders([NAME]), out) == ([entry], [])
    assert mtimes(out) == before


def test_a_retrained_embedder_rewrites_what_changed_and_stale_files_go(tiny_model: Any, tmp_path: Path) -> None:
    publish(tiny_model)
    out = tmp_path / "bundle"
    carry_embedders(check_embedders([NAME]), out)
    (out / "embedders" / "old-one").mkdir()
    (out / "embedders" / "old-one" / "model.safetensors").write_bytes(b"from an earlier run")
    (out / "embedders" / NAME / "2_Dense").mkdir()
    (out / "embedders" / NAME / "2_Dense" / "config.json").write_text("{}")
    publish(tiny_model, steps=41)  # same weights, a new manifest
    [entry], written = carry_embedders(check_embedders([NAME]), out)
    assert written == [f"embedders/{NAME}/{MANIFEST}"]
    assert sorted(p.name for p in (out / "embedders").iterdir()) == [NAME]
    assert folder_files(out / "embedders" / NAME) == sorted(f["path"].split("/", 2)[2] for f in entry["files"])
    assert carry_embedders([], out) == ([], []) and not (out / "embedders").exists()


def test_an_unknown_name_fails_before_anything_is_fetched(tiny_model: Any, tmp_path: Path, capsys) -> None:
    publish(tiny_model)
    with pytest.raises(InputError, match=rf"no trained embedder named 'nope' .*known: {NAME}.*ragtune embedders list"):
        check_embedders(["nope"])
    out = tmp_path / "bundle"
    capsys.readouterr()
    assert main(["bundle", "-o", str(out), "--embedder", NAME, "--embedder", "nope"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "'nope'" in error and "ragtune embedders list" in error
    assert not out.exists()  # refused before the bundle folder was made or pip ran


def test_a_damaged_embedder_is_refused_with_its_error(tiny_model: Any, tmp_path: Path, capsys) -> None:
    weights = publish(tiny_model) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=rf"trained embedder '{NAME}' .* is damaged: .*model.safetensors"):
        check_embedders([NAME])
    assert main(["bundle", "-o", str(tmp_path / "bundle"), "--embedder", NAME]) == 2
    assert "is damaged" in capsys.readouterr().err


def test_the_lock_and_the_sbom_name_the_embedder(tiny_model: Any, tmp_path: Path) -> None:
    publish(tiny_model)
    carried, _ = carry_embedders(check_embedders([NAME]), tmp_path)
    plan = Plan(target="cpu", python=python_info())
    lock, bare = _lock(plan, [], carried), _lock(plan, [], [])
    assert lock["embedders"] == carried
    sbom = make_sbom(lock, tmp_path)
    [model] = [c for c in sbom["components"] if c["bom-ref"] == f"embedder:{NAME}"]
    manifest = next(f for f in carried[0]["files"] if f["path"].endswith(MANIFEST))
    assert model["type"] == "machine-learning-model" and model["hashes"][0]["content"] == manifest["sha256"]
    assert model["licenses"] == [{"license": {"name": "MIT"}}]  # minilm-l6's, its base
    assert sbom["serialNumber"] != make_sbom(bare, tmp_path)["serialNumber"]


def test_verify_covers_every_embedder_file(tiny_model: Any, tmp_path: Path) -> None:
    publish(tiny_model)
    bundle = tmp_path / "bundle"
    lock = carried_bundle(bundle, [NAME])
    verify.verify(bundle)
    weights = bundle / "embedders" / NAME / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(verify.Refused, match=f"embedders/{NAME}/model.safetensors: sha256 differs"):
        verify.verify(bundle)
    weights.write_bytes(good)
    (bundle / "embedders" / NAME / "extra.json").write_text("{}")
    with pytest.raises(verify.Refused, match=f"embedders/{NAME}/extra.json: not in bundle.lock.json"):
        verify.verify(bundle)
    (bundle / "embedders" / NAME / "extra.json").unlink()
    weights.unlink()
    with pytest.raises(verify.Refused, match=f"embedders/{NAME}/model.safetensors: missing"):
        verify.verify(bundle)
    assert len(verify.embedder_files(lock)) == len(folder_files(bundle / "embedders" / NAME)) + 1


def far_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("RAGTUNE_HOME", str(tmp_path / "far"))
    return tmp_path / "far" / "embedders"


def test_install_places_the_embedder_atomically_and_keeps_an_identical_one(
    tiny_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(tiny_model)
    bundle = tmp_path / "bundle"
    lock = carried_bundle(bundle, [NAME])
    far = far_home(monkeypatch, tmp_path)
    assert install_embedders(bundle, lock) == [(NAME, "installed")]
    installed = read_trained_embedder(NAME)
    assert installed.path == far / NAME and installed.manifest["steps"] == 40
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(installed.path), device="cpu", local_files_only=True)
    assert np.allclose(model.encode(TEXTS), tiny_model.encode(TEXTS), atol=1e-6)
    inode = (far / NAME).stat().st_ino
    assert install_embedders(bundle, lock) == [(NAME, "kept")]
    assert (far / NAME).stat().st_ino == inode

    # A different embedder under the same name replaces it, whole.
    monkeypatch.setenv("RAGTUNE_HOME", str(tmp_path / "home"))
    publish(tiny_model, steps=41)
    lock["embedders"], _ = carry_embedders(check_embedders([NAME]), bundle)
    far_home(monkeypatch, tmp_path)
    assert install_embedders(bundle, lock) == [(NAME, "installed")]
    assert read_trained_embedder(NAME).manifest["steps"] == 41
    assert [p.name for p in far.iterdir() if p.is_dir()] == [NAME]  # no staging or replaced folder left


def test_a_bad_copy_fails_with_its_name_and_leaves_the_old_one(
    tiny_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(tiny_model)
    bundle = tmp_path / "bundle"
    lock = carried_bundle(bundle, [NAME])
    far_home(monkeypatch, tmp_path)
    install_embedders(bundle, lock)
    monkeypatch.setenv("RAGTUNE_HOME", str(tmp_path / "home"))
    publish(tiny_model, steps=41)
    lock["embedders"], _ = carry_embedders(check_embedders([NAME]), bundle)
    far = far_home(monkeypatch, tmp_path)
    weights = bundle / "embedders" / NAME / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])  # damaged after verify.py passed it
    with pytest.raises(ModelError, match=f"the copy of trained embedder '{NAME}' does not match"):
        install_embedders(bundle, lock)
    assert read_trained_embedder(NAME).manifest["steps"] == 40  # the old one, intact
    assert [p.name for p in far.iterdir() if p.is_dir()] == [NAME]


def test_install_sh_runs_the_module_alone_against_a_folder(tiny_model: Any, tmp_path: Path) -> None:
    publish(tiny_model)
    bundle = tmp_path / "bundle"
    carried_bundle(bundle, [NAME])
    command = [sys.executable, "-I", "-m", "ragtune.bundle.embedders", str(bundle)]
    env = {**os.environ, "RAGTUNE_HOME": str(tmp_path / "far")}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert f"trained embedder {NAME} installed" in done.stdout and f"--set embedder.model={NAME}" in done.stdout
    assert (tmp_path / "far" / "embedders" / NAME / MANIFEST).is_file()
    (bundle / "embedders" / NAME / MANIFEST).write_text("{}")  # a bad copy: the install stops, naming it
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    assert done.returncode == 1 and NAME in done.stderr and "Traceback" not in done.stderr, done.stderr
    script = (Path(verify.__file__).parent / "install.sh").read_text(encoding="utf-8")
    assert '-m ragtune.bundle.embedders "$BUNDLE"' in script


def test_the_summary_says_how_to_use_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    seen = {}

    def fake_build(out: Path, repo: Path, target: str, presets: list[str], llamacpp: str, embedders: list[str]):
        seen["embedders"] = embedders
        return BundleResult(out=out, files=3, bytes=2**20, fetched=[], written=[], embedders=embedders)

    monkeypatch.setattr("ragtune.bundle.build.build_bundle", fake_build)
    assert main(["bundle", "-o", str(tmp_path), "--embedder", NAME]) == 0
    assert seen["embedders"] == [NAME]
    assert f"--set embedder.model={NAME}" in capsys.readouterr().out
