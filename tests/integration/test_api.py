"""The Python API: ragtune.open -> ingest / ask / stream, with the CLI's typed errors, and the docs' snippet run."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

import ragtune
from models.config import load_config
from models.errors import ConfigError, IndexMissingError, InputError
from tests.conftest import REPO


def test_open_ingest_ask_and_stream(tiny_lm_path: Path, docs: Path) -> None:
    rt = ragtune.open(overrides=[f"llm.model={tiny_lm_path}", "llm.max_new_tokens=4", "llm.dtype=float32"])
    summary = rt.ingest([docs])
    assert len(summary.added) == 6 and summary.generation
    answer = rt.ask("When is the Eastside Branch closed?")
    assert Path(answer.sources[0].path).name == "hours-and-branches.html"
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    answerer = rt._answering()
    pieces = list(rt.stream("How long can I borrow a DVD?"))
    assert rt._answering() is answerer  # the models loaded once serve every question
    assert pieces and all(pieces)  # only text is handed on: the held-back answer's steps are not
    assert "".join(pieces) == rt.ask("How long can I borrow a DVD?").text
    assert rt.ingest([docs]).unchanged == 6


def test_open_takes_a_config_object_or_a_file(tiny_lm_path: Path, tmp_path: Path) -> None:
    config = load_config(None, [f"llm.model={tiny_lm_path}"])
    rt = ragtune.open(config, overrides=["rag.top_k=3"])
    assert rt.config.rag.top_k == 3 and rt.config.llm.model == str(tiny_lm_path)
    path = tmp_path / "c.yaml"
    path.write_text("rag:\n  top_k: 7\n")
    assert ragtune.open(path).config.rag.top_k == 7


def test_the_same_typed_errors_as_the_cli(tiny_lm_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rag.top_k \(--set rag.top_k=zero\): should be int"):
        ragtune.open(overrides=["rag.top_k=zero"])
    with pytest.raises(ConfigError, match="does not exist"):
        ragtune.open("/no/such.yaml")
    rt = ragtune.open(overrides=[f"llm.model={tiny_lm_path}"])
    with pytest.raises(InputError, match="/no/such/folder: no such file or folder"):
        rt.ingest(["/no/such/folder"])
    with pytest.raises(IndexMissingError, match="no documents indexed"):
        rt.ask("anything")


def api_snippet() -> str:
    page = (REPO / "docs" / "python-api.md").read_text(encoding="utf-8")
    (code,) = re.findall(r"```python\n(.*?)```", page, re.S)
    return code


def test_the_docs_snippet_runs_as_written(tiny_lm_path: Path, tmp_path: Path, monkeypatch) -> None:
    # Only the model differs: the tiny LM through $RAGTUNE_CONFIG, as a site would point at its own config.
    config = tmp_path / "tiny.yaml"
    config.write_text(f"llm:\n  model: {tiny_lm_path}\n  max_new_tokens: 8\n  dtype: float32\n")
    monkeypatch.setenv("RAGTUNE_CONFIG", str(config))
    monkeypatch.chdir(REPO)  # the snippet's paths are the checkout's examples
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(api_snippet(), "docs/python-api.md", "exec"), {"__name__": "docs"})  # noqa: S102 - our own docs
    printed = output.getvalue()
    assert "examples/docs/library-cards.md" in printed, printed
    assert (Path(os.environ["RAGTUNE_HOME"]) / "indexes" / "default" / "CURRENT").is_file()
