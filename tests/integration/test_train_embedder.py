"""`ragtune train --target embedder` end to end on a tiny embedder: train, use, retrain, resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.config import load_config
from models.errors import ConfigError
from models.paths import index_dir
from models.trained_embedders import read_embedder_manifest, trained_embedder_path
from rag.collection import expectation, open_snapshot
from ragtune.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny import build_tiny_embedder

    folder = tmp_path_factory.mktemp("tiny-embedder")
    build_tiny_embedder(folder)
    return folder / "model"


def settings(embedder: Path, steps: int = 4, save_every: int = 25) -> list[str]:
    values = [
        f"embedder.model={embedder}",
        "rag.chunk_tokens=48",
        "rag.chunk_overlap=8",
        f"finetune.embedder.max_steps={steps}",
        "finetune.embedder.batch_size=4",
        f"finetune.embedder.save_every={save_every}",
    ]
    return [arg for value in values for arg in ("--set", value)]


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_use_retrain_and_rebuild(
    docs: Path, tiny_embedder: Path, tiny_lm_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, out, err = run(capsys, "train", "--target", "embedder", "--docs", str(docs), "--name", "lib-emb",
                         *settings(tiny_embedder))  # fmt: skip
    assert code == 0, err
    assert "trained embedder lib-emb: 4 steps" in out and "--set embedder.model=lib-emb" in out
    manifest = read_embedder_manifest(trained_embedder_path("lib-emb"))
    assert manifest["base"] == str(tiny_embedder) and manifest["steps"] == 4
    assert manifest["queries"]["method"] == "sentence" and manifest["queries"]["count"] > 4
    assert manifest["data"]["chunks"] > 4 and len(manifest["data"]["sha256"]) == 64
    assert not (Path(os.environ["RAGTUNE_HOME"]) / "runs" / "embedder-lib-emb").exists()  # published: run cleared

    use = ["embedder.model=lib-emb", "rag.chunk_tokens=48", "rag.chunk_overlap=8", f"llm.model={tiny_lm_path}",
           "llm.max_new_tokens=4", "llm.dtype=float32"]  # fmt: skip
    flags = [arg for value in use for arg in ("--set", value)]
    code, _, err = run(capsys, "ingest", str(docs), *flags)
    assert code == 0, err
    code, out, err = run(capsys, "ask", "--json", "How long can I borrow a DVD?", *flags)
    assert code == 0 and json.loads(out)["sources"], err

    # Trained again under the same name: the index built with the old weights refuses, and names the fix.
    code, _, err = run(capsys, "train", "--target", "embedder", "--docs", str(docs), "--name", "lib-emb",
                       *settings(tiny_embedder, steps=2))  # fmt: skip
    assert code == 0, err
    config = load_config(None, use)
    with pytest.raises(ConfigError, match="trained again.*ingest --rebuild"):
        open_snapshot(index_dir(config), expectation(config, 32))
    code, _, err = run(capsys, "ask", "How long can I borrow a DVD?", *flags)
    assert code != 0 and "trained again" in err
    code, _, err = run(capsys, "ingest", "--rebuild", str(docs), *flags)
    assert code == 0, err
    assert open_snapshot(index_dir(config), expectation(config, 32)).manifest["embedder"].startswith("lib-emb@")


def test_bad_input_is_one_line_naming_the_fix(tmp_path: Path, tiny_embedder: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    code, _, err = run(
        capsys, "train", "--target", "embedder", "--docs", str(empty), "--name", "x", *settings(tiny_embedder)
    )
    assert code != 0 and "no readable document" in err and "Traceback" not in err

    code, _, err = run(capsys, "train", "--target", "embedder", "--docs", str(empty), "--name", "minilm-l6")
    assert code != 0 and "minilm-l6" in err and "Traceback" not in err

    code, _, err = run(capsys, "train", "--target", "embedder", "--name", "x")
    assert code != 0 and "--docs" in err

    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("hello")
    code, _, err = run(capsys, "train", "--target", "embedder", "--docs", str(not_a_model), "--name", "x",
                       "--set", f"embedder.model={not_a_model}")  # fmt: skip
    assert code != 0 and str(not_a_model) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2


def test_killed_run_resumes_from_its_last_checkpoint(docs: Path, tiny_embedder: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "ragtune.cli", "train", "--target", "embedder", "--docs", str(docs), "--name",
               "killed", *settings(tiny_embedder, steps=60, save_every=2)]  # fmt: skip
    run_dir = Path(env["RAGTUNE_HOME"]) / "runs" / "embedder-killed"
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(run_dir.glob("checkpoint-*")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode()[-2000:] if process.stderr else ""
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not trained_embedder_path("killed").exists()

    changed = subprocess.run(
        [*command, "--resume", "--set", "finetune.embedder.lr=1e-4"], env=env, capture_output=True, text=True
    )
    assert changed.returncode != 0 and "started with other settings" in changed.stderr
    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming killed" in resumed.stderr
    manifest = read_embedder_manifest(trained_embedder_path("killed"))
    assert manifest["steps"] == 60
    assert json.loads(json.dumps(manifest["settings"]))["save_every"] == 2
