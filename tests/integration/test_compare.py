"""`ragtune compare` end to end on a tiny LM and the real embedder: every section measured, reuse, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from models.config import load_config
from ragtune.cli import main
from ragtune.data.corpus import document_chunks
from tests.conftest import EXAMPLES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_sets(tiny_lm_path: Path) -> list[str]:
    # The tiny LM's tokenizer spends many tokens per word: RAFT prompts need a longer limit.
    sets = [f"llm.model={tiny_lm_path}", "llm.max_new_tokens=6", "llm.dtype=float32"]
    sets += ["finetune.max_steps=2", "finetune.max_seq_len=4096"]
    return [arg for s in sets for arg in ("--set", s)]


def phase_times(out: Path) -> dict[str, float]:
    return {p.name: json.loads(p.read_text())["finished_at"] for p in (out / "phases").glob("*.json")}


def test_full_compare_fills_every_section_and_a_rerun_redoes_nothing(
    docs: Path, tiny_lm_path: Path, tmp_path: Path, ragtune_home: Path, embedder, capsys: pytest.CaptureFixture
) -> None:
    update_docs = tmp_path / "update-docs"
    shutil.copytree(EXAMPLES / "update" / "docs", update_docs)
    out = tmp_path / "report"
    command = [
        "compare",
        "--docs", str(docs),
        "--questions", str(EXAMPLES / "questions.jsonl"),
        "--train-data", str(EXAMPLES / "train.jsonl"),
        "--update-docs", str(update_docs),
        "--update-questions", str(EXAMPLES / "update" / "questions.jsonl"),
        "--update-train-data", str(EXAMPLES / "update" / "train.jsonl"),
        "-o", str(out),
        *tiny_sets(tiny_lm_path),
    ]  # fmt: skip
    assert main(command) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and results["unfinished"] == [] and results["primary_metric"] == "contains"
    paths = results["paths"]
    assert set(paths) == {"base", "rag", "finetune", "hybrid"}
    for name, entry in paths.items():
        assert entry["status"] == "done"
        assert entry["metrics"]["contains"]["n"] == 6 and len(entry["metrics"]["f1"]["ci95"]) == 2
        assert entry["latency"]["total_s"]["p50"] > 0 and entry["latency"]["first_token_s"]["p95"] > 0
        assert entry["cost"]["answer_peak_rss_mb"] > 100  # a child that loaded torch and a model
        assert entry["config"]["mode"] == ("rag" if name == "base" else name)
        assert len((Path(entry["answers"])).read_text().splitlines()) == 6
    chunks = len(document_chunks([docs], load_config(None), embedder))  # cut as ingest cuts them
    for name in ("rag", "hybrid"):
        cost = paths[name]["cost"]
        assert paths[name]["metrics"]["hit@3"]["mean"] == 1.0  # the real embedder finds every gold document
        assert cost["index_build_s"] > 0 and cost["index_chunks"] == chunks and cost["disk_bytes"] > 0
        assert paths[name]["config"]["index"]["name"].startswith("compare-")
    for name in ("finetune", "hybrid"):
        cost = paths[name]["cost"]
        # LoRA r=8 on q, k, v, o of 2 layers (hidden 64; k and v project to 2 heads x 16 = 32):
        # per layer 8*(64+64) + 2 * 8*(64+32) + 8*(64+64) = 3584.
        assert cost["training_s"] > 0 and cost["training_steps"] == 2 and cost["trainable_params"] == 2 * 3584
        assert cost["peak_rss_mb"] >= cost["answer_peak_rss_mb"]
        assert paths[name]["config"]["finetune"]["adapter"] == cost["adapter"]
    # hybrid reads with a RAFT adapter (the training pairs name their documents), not the finetune one.
    assert paths["hybrid"]["cost"]["adapter"].startswith("compare-raft-")
    assert paths["hybrid"]["cost"]["raft_data_s"] > 0
    assert paths["base"]["cost"]["one_off_s"] == 0 and paths["base"]["cost"]["trainable_params"] == 0
    assert set(results["differences"]) == {
        "base - rag", "base - finetune", "base - hybrid", "finetune - rag", "finetune - hybrid", "hybrid - rag"
    }  # fmt: skip

    update = results["update"]
    assert update["added_documents"] == 2 and update["retrained_examples"] == 18
    for name in ("rag", "finetune", "hybrid"):
        row = update["paths"][name]
        assert row["update_s"] > 0 and row["new"]["n"] == 3 and row["old"]["n"] == 6
    assert update["paths"]["base"]["update_s"] == 0 and update["paths"]["base"]["new"]["n"] == 3
    assert update["paths"]["finetune"]["how"].startswith("retrained")
    # The updated index holds the new documents: retrieval finds the gold document of every new question.
    assert update["paths"]["rag"]["new_metrics"]["hit@3"]["mean"] == 1.0

    assert results["machine"]["CPU"] and results["machine"]["transformers"] != "not installed"
    assert results["verdict"].startswith("On these 6 questions") or results["verdict"].startswith("No path got")
    assert "Adding 2 new documents took rag" in results["verdict"]

    report = (out / "report.md").read_text()
    assert "## Verdict" in report and results["verdict"] in report and "| training |" in report
    # rag and hybrid answers are checked: each is the fixed refusal or cites a source, and is counted once.
    for name in ("rag", "hybrid"):
        metrics = paths[name]["metrics"]
        assert (
            metrics["citation_rate"]["n"] + metrics["refusals"]
            == 6
            == metrics["groundedness"]["n"] + metrics["refusals"]
        )
        for row in map(json.loads, Path(paths[name]["answers"]).read_text().splitlines()):
            assert row["cited"] if not row["refused"] else row["prediction"].startswith("I could not find")
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "http://" not in page and "https://" not in page
    for chart in ("accuracy", "latency", "cost", "update"):
        assert (out / f"{chart}.png").read_bytes().startswith(PNG_MAGIC)

    # The same command again: every step is found finished and kept, nothing is retrained or re-asked.
    before = phase_times(out)
    adapters = sorted(p.name for p in (ragtune_home / "adapters").iterdir())
    assert len(adapters) == 3  # finetune, RAFT, and finetune retrained after the update
    capsys.readouterr()
    assert main(command) == 0
    assert phase_times(out) == before
    assert "finished earlier, kept" in capsys.readouterr().out
    assert sorted(p.name for p in (ragtune_home / "adapters").iterdir()) == adapters


def test_an_interrupted_compare_reports_what_finished_and_resumes(
    docs: Path, tiny_lm_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import ragtune.compare.runner as runner

    out = tmp_path / "report"
    command = [
        "compare", "--docs", str(docs), "--questions", str(EXAMPLES / "questions.jsonl"),
        "--paths", "base,rag", "-o", str(out), *tiny_sets(tiny_lm_path),
    ]  # fmt: skip
    real = runner.run_cli

    def interrupted_at_rag(args: list[str], name: str, log_dir: Path):
        if name == "rag":
            raise KeyboardInterrupt  # what Ctrl-C raises in the parent while the rag eval runs
        return real(args, name, log_dir)

    monkeypatch.setattr(runner, "run_cli", interrupted_at_rag)
    assert main(command) == 130
    results = json.loads((out / "results.json").read_text())
    assert not results["complete"] and results["unfinished"] == ["rag"]
    assert results["paths"]["base"]["status"] == "done" and results["paths"]["rag"]["status"] == "not run"
    assert results["paths"]["rag"]["cost"]["index_build_s"] > 0  # the index finished before the interruption
    assert "Incomplete run" in (out / "report.md").read_text()
    assert "This run is incomplete (rag missing)" in results["verdict"]
    finished = phase_times(out)
    assert set(finished) == {"index.json", "base.json"}

    monkeypatch.setattr(runner, "run_cli", real)
    capsys.readouterr()
    assert main(command) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and results["paths"]["rag"]["status"] == "done"
    after = phase_times(out)
    assert {k: after[k] for k in finished} == finished  # index and base were not redone
    assert "Incomplete" not in (out / "report.md").read_text()


def test_retriever_auto_scores_the_settings_first_and_rag_retrieves_with_the_best(
    docs: Path, tiny_lm_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "report"
    command = [
        "compare", "--docs", str(docs), "--questions", str(EXAMPLES / "questions.jsonl"),
        "--paths", "rag", "--retriever", "auto", "-o", str(out), *tiny_sets(tiny_lm_path),
    ]  # fmt: skip
    assert main(command) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    retrieval = results["retrieval"]
    assert retrieval["mode"] == "auto" and retrieval["choice"] in retrieval["settings"]
    assert retrieval["metric"] == "evidence_hit@5" and retrieval["scored_questions"] == 6
    chosen = retrieval["settings"][retrieval["choice"]]
    assert chosen["status"] == "done" and chosen["metrics"]["evidence_hit@5"]["mean"] == 1.0
    assert retrieval["overrides"] == chosen["overrides"]
    # The rag path answered with the chosen retriever, and its answers are scored per chunk too.
    picked = dict(o.split("=", 1) for o in retrieval["overrides"])["rag.retriever"]
    rag = results["paths"]["rag"]
    assert rag["config"]["rag"]["retriever"] == picked
    assert rag["metrics"]["evidence_hit@5"]["mean"] == 1.0 and rag["metrics"]["doc_hit@1"]["n"] == 6
    report = (out / "report.md").read_text()
    assert "## Retrieval settings" in report and f"rag and hybrid retrieved with {retrieval['choice']}" in report
    assert "| evidence hit@5 (a top-5 chunk from a gold document holds an answer) |" in report
    assert "Retrieval settings" in (out / "report.html").read_text()

    before = phase_times(out)
    capsys.readouterr()
    assert main(command) == 0
    assert phase_times(out) == before and "retrieval: finished earlier, kept" in capsys.readouterr().out


def test_an_adapter_trained_by_hand_on_the_same_inputs_is_reused_and_new_data_retrains(
    docs: Path, tiny_lm_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sets = tiny_sets(tiny_lm_path)
    train = tmp_path / "train.jsonl"
    shutil.copy(EXAMPLES / "train.jsonl", train)
    assert main(["train", "--data", str(train), "--name", "by-hand", *sets]) == 0
    out = tmp_path / "report"
    command = [
        "compare", "--docs", str(docs), "--questions", str(EXAMPLES / "questions.jsonl"),
        "--paths", "finetune", "--train-data", str(train), "-o", str(out), *sets,
    ]  # fmt: skip
    assert main(command) == 0, capsys.readouterr().err
    cost = json.loads((out / "results.json").read_text())["paths"]["finetune"]["cost"]
    assert cost["adapter"] == "by-hand" and cost["reused"] == ["by-hand"] and cost["training_s"] > 0

    # Different training data: a different adapter, trained for it, and the old answers are redone.
    with train.open("a") as handle:
        handle.write(json.dumps({"prompt": "Is there a seed library?", "completion": "Yes, at Eastside."}) + "\n")
    assert main(command) == 0, capsys.readouterr().err
    cost = json.loads((out / "results.json").read_text())["paths"]["finetune"]["cost"]
    assert cost["adapter"].startswith("compare-finetune-") and cost["reused"] == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--paths", "finetune"], "needs training data: --train-data FILE"),
        (["--paths", "rag,tuned"], "--paths: unknown tuned"),
        (["--update-docs", "{docs}"], "--update-docs and --update-questions go together"),
        (["--train-data", "missing.jsonl"], "--train-data missing.jsonl: no such file"),
        (["--paths", "base", "--limit", "0"], "limit should be a whole number of at least 1"),
        (["--paths", "base", "--retriever", "auto"], "--retriever auto picks how rag and hybrid retrieve"),
    ],
)
def test_bad_compare_options_are_refused_before_any_work(
    docs: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    extra = [e.format(docs=docs) for e in extra]
    out = tmp_path / "report"
    code = main(
        ["compare", "--docs", str(docs), "--questions", str(EXAMPLES / "questions.jsonl"), "-o", str(out), *extra]
    )
    assert code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_a_bad_question_line_is_reported_before_any_work(docs: Path, tmp_path: Path, capsys) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "Fine?", "answers": ["yes"]}\n{"question": "No answers"}\n')
    out = tmp_path / "report"
    assert main(["compare", "--docs", str(docs), "--questions", str(questions), "--paths", "rag", "-o", str(out)]) == 2
    assert f"{questions}:2" in capsys.readouterr().err and not out.exists()


def test_an_output_path_that_is_a_file_and_a_folder_without_documents_are_refused(
    docs: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    questions = str(EXAMPLES / "questions.jsonl")
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    assert main(["compare", "--docs", str(docs), "--questions", questions, "--paths", "base", "-o", str(taken)]) == 2
    assert f"-o {taken}: a file is there" in capsys.readouterr().err and taken.read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "report"
    assert main(["compare", "--docs", str(empty), "--questions", questions, "--paths", "rag", "-o", str(out)]) == 2
    assert f"--docs {empty}: no document text was indexed" in capsys.readouterr().err
    assert not json.loads((out / "results.json").read_text())["complete"]  # the report says what did not finish
