"""Two processes preparing the same model at once, sharing one cache: both succeed, one copy is made."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.presets import PRESETS, piece_paths
from tests.conftest import REPO


@pytest.mark.slow
def test_two_prepares_of_one_model_at_once_both_succeed(tmp_path: Path) -> None:
    gguf = piece_paths(PRESETS["smollm2-135m-instruct"])[0]
    env = {**os.environ, "RAGTUNE_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    # transformers: the engine whose preparation writes a dequantised copy into the shared cache (llamacpp
    # reads a single-file GGUF where it lies).
    command = [sys.executable, "-m", "ragtune.cli", "models", "prepare", "--set", f"llm.model={gguf}"]
    command += ["--set", "llm.backend=transformers"]
    runs = [subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    runs.append(subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [(run.wait(timeout=600), *run.communicate()) for run in runs]
    for code, _, err in results:
        assert code == 0, err[-2000:]
    folders = {out.strip().splitlines()[-1] for _, out, _ in results}
    assert len(folders) == 1  # the same prepared folder for both
    models = tmp_path / "cache" / "models"
    assert [p.name for p in models.iterdir() if p.is_dir()] == [Path(folders.pop()).name]
    printed = sum("preparing" in out for _, out, _ in results)
    assert printed == 1  # the second waited for the first instead of preparing its own copy
