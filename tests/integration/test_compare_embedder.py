"""`ragtune compare --paths rag,rag-tuned-embedder`: an embedder trained on --docs, indexed with, answered as rag."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ragtune.cli import main
from tests.conftest import EXAMPLES
from tests.integration.test_compare import phase_times

TUNED = "rag-tuned-embedder"


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny import build_tiny_embedder

    folder = tmp_path_factory.mktemp("tiny-embedder")
    build_tiny_embedder(folder)
    return folder / "model"


def sets(tiny_lm_path: Path, tiny_embedder: Path) -> list[str]:
    values = [f"llm.model={tiny_lm_path}", "llm.max_new_tokens=6", "llm.dtype=float32"]
    # Chunks the tiny embedder takes whole; two small steps of embedder training.
    values += [f"embedder.model={tiny_embedder}", "rag.chunk_tokens=48", "rag.chunk_overlap=8"]
    values += ["finetune.embedder.max_steps=2", "finetune.embedder.batch_size=4"]
    return [arg for value in values for arg in ("--set", value)]


def test_the_tuned_embedder_path_trains_indexes_answers_and_is_reused(
    docs: Path,
    tiny_lm_path: Path,
    tiny_embedder: Path,
    tmp_path: Path,
    ragtune_home: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    update_docs = tmp_path / "update-docs"
    shutil.copytree(EXAMPLES / "update" / "docs", update_docs)
    out = tmp_path / "report"
    common = [
        "compare", "--docs", str(docs), "--questions", str(EXAMPLES / "questions.jsonl"), "--paths", f"rag,{TUNED}",
        *sets(tiny_lm_path, tiny_embedder),
    ]  # fmt: skip
    command = [*common, "-o", str(out)]
    assert main(command) == 0, capsys.readouterr().err
    phases = {"index.json", "train-embedder.json", "index-embedder.json", "rag.json", f"{TUNED}.json"}
    assert set(phase_times(out)) == phases
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and list(results["paths"]) == ["rag", TUNED]
    tuned, rag = results["paths"][TUNED], results["paths"]["rag"]
    assert tuned["status"] == "done" and tuned["metrics"]["contains"]["n"] == 6
    # It answers as rag, over its own index, embedding the questions with the trained embedder.
    embedder = tuned["cost"]["embedder"]
    assert embedder.startswith("compare-emb-") and (ragtune_home / "embedders" / embedder).is_dir()
    assert tuned["config"]["mode"] == "rag" and tuned["config"]["embedder"]["model"] == embedder
    assert tuned["config"]["index"]["name"] != rag["config"]["index"]["name"]
    assert rag["config"]["embedder"]["model"] == str(tiny_embedder)
    cost = tuned["cost"]
    assert cost["training_s"] > 0 and cost["index_build_s"] > 0 and cost["training_steps"] == 2
    assert cost["one_off_s"] == pytest.approx(cost["training_s"] + cost["index_build_s"])
    assert cost["embedder_queries"] == "sentence" and cost["embedder_queries_s"] is not None
    assert cost["index_chunks"] == rag["cost"]["index_chunks"] and cost["disk_bytes"] > rag["cost"]["disk_bytes"]
    assert cost["peak_rss_mb"] >= cost["answer_peak_rss_mb"] > 100 and cost["reused"] == []
    assert set(results["differences"]) == {f"rag - {TUNED}"}

    assert f"{TUNED} " in results["verdict"] and "of embedder training" in results["verdict"]

    report = (out / "report.md").read_text()
    assert f"| figure | rag | {TUNED} |" in report and f"| trained embedder |  | {embedder} |" in report
    assert (out / "cost.png").is_file()

    # The same command again: nothing is trained, indexed or asked again.
    before = phase_times(out)
    capsys.readouterr()
    assert main(command) == 0
    assert phase_times(out) == before and "train:embedder: finished earlier, kept" in capsys.readouterr().out

    # Another report folder, same documents and settings: the stored embedder is found and reused, not retrained;
    # then new documents arrive and are embedded with it (each phase is a child process: rag is left out here).
    other = tmp_path / "other"
    capsys.readouterr()
    alone = [arg if arg != f"rag,{TUNED}" else TUNED for arg in common]
    update = ["--update-docs", str(update_docs), "--update-questions", str(EXAMPLES / "update" / "questions.jsonl")]
    assert main([*alone, *update, "-o", str(other)]) == 0
    assert f"embedder {embedder} was trained on the same documents and settings, reused" in capsys.readouterr().out
    results = json.loads((other / "results.json").read_text())
    cost = results["paths"][TUNED]["cost"]
    assert cost["embedder"] == embedder and embedder in cost["reused"] and cost["training_s"] is not None
    assert set(phase_times(other)) == {
        "train-embedder.json", "index-embedder.json", f"{TUNED}.json",
        "update-index-embedder.json", f"update-{TUNED}-old.json", f"update-{TUNED}-new.json",
    }  # fmt: skip
    row = results["update"]["paths"][TUNED]
    assert row["how"].startswith("incremental ingest") and "trained embedder is kept" in row["how"]
    assert row["update_s"] > 0 and row["new"]["n"] == 3 and row["old"]["n"] == 6
    assert (other / "update.png").is_file()
    assert sorted(p.name for p in (ragtune_home / "embedders").iterdir() if not p.name.startswith(".")) == [embedder]
