"""The serving snippets of docs/serving.md, run exactly as written (only the port differs) against a real server."""

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from models.config import load_config
from models.generate import load_language_model
from rag.ingest import ingest
from ragtune.serve.background import running
from ragtune.serve.engine import Engine
from ragtune.serve.server import assemble
from tests.conftest import REPO

KEY = "docs-" + "k" * 32


def serving_snippets() -> list[str]:
    page = (REPO / "docs" / "serving.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", page, re.S)


def test_the_serving_page_has_the_chat_and_the_fine_tuning_snippets() -> None:
    snippets = serving_snippets()
    assert len(snippets) == 2
    assert 'base_url="http://127.0.0.1:8000/v1"' in snippets[0] and "fine_tuning.jobs.create" in snippets[1]


def test_the_serving_snippets_run_against_ragtune_serve(
    tmp_path: Path, docs: Path, tiny_lm_path: Path, embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(
        None,
        [
            f"llm.model={tiny_lm_path}",
            "llm.dtype=float32",
            "llm.device=cpu",
            "llm.max_new_tokens=8",
            "finetune.max_steps=2",
            "finetune.batch_size=2",
            "finetune.eval_fraction=0",
        ],
    )
    ingest([docs], config, embedder, progress=False)
    (tmp_path / "key.txt").write_text(KEY + "\n")
    pairs = [("How many people fit in the large meeting room?", "40 people."), ("When does it open?", "At nine.")]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"prompt": q, "completion": a}) + "\n" for q, a in pairs))
    monkeypatch.chdir(tmp_path)
    app = assemble(Engine(config, embedder=embedder, lm=load_language_model(config.llm, progress=False)), KEY)
    output = io.StringIO()
    with running(app) as url, contextlib.redirect_stdout(output):
        code = "\n".join(serving_snippets()).replace("http://127.0.0.1:8000", url)
        exec(compile(code, "docs/serving.md", "exec"), {"__name__": "docs"})  # noqa: S102 - our own docs
    printed = output.getvalue()
    assert "borrowing-rules.txt" in printed  # the sources of the first answer
    assert str(docs) not in printed  # shown relative to their indexed folder, never by the server's path
    assert re.search(r"^succeeded finetune:library-\w+$", printed, re.M), printed
