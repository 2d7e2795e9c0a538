"""`ragtune eval` over the example question set: real retrieval scores, a tiny LM for the answers."""

import json
from pathlib import Path

import pytest

from ragtune.cli import main
from tests.conftest import EXAMPLES


def test_eval_scores_retrieval_and_writes_results(
    docs: Path, tiny_lm_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    tiny = ["--set", f"llm.model={tiny_lm_path}", "--set", "llm.max_new_tokens=4"]
    assert main(["ingest", str(docs), *tiny]) == 0
    capsys.readouterr()
    out = tmp_path / "run"
    code = main(
        ["eval", "--questions", str(EXAMPLES / "questions.jsonl"), "--docs", str(docs), "-o", str(out), "--json", *tiny]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    results = json.loads(captured.out)
    assert results == json.loads((out / "results.json").read_text())
    metrics = results["metrics"]
    assert results["questions"] == 6 and metrics["hit@3"]["mean"] == 1.0  # every gold document retrieved
    assert metrics["mrr"]["mean"] >= 0.9 and metrics["hit@3"]["n"] == 6
    # Per chunk, on the first 10 retrieved while the answer read 3: a gold chunk holding the answer comes first.
    for k in (1, 5, 10):
        assert metrics[f"doc_hit@{k}"]["mean"] == 1.0 and metrics[f"evidence_hit@{k}"]["mean"] == 1.0, k
    assert results["latency"]["total_s"]["p50"] > 0 and results["path"] == "rag"
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [a["id"] for a in answers] == [f"q{i}" for i in range(1, 7)]
    # Each figure is the mean of the per-question scores written beside it.
    for metric, field in (("f1", "f1"), ("em", "em"), ("contains", "contains"), ("mrr", "rr")):
        assert metrics[metric]["mean"] == pytest.approx(sum(a[field] for a in answers) / 6), metric
    assert metrics["refusals"] == sum(a["refused"] for a in answers)
    assert all(a["sources"] and all(Path(s).is_relative_to(docs.resolve()) for s in a["sources"]) for a in answers)
    assert all(a["retrieval"]["evidence@1"] == 1.0 for a in answers)
    # Scored deeper than the answer read: up to 10 chunks above rag.min_score against 3.
    assert all(len(a["ranked_chunks"]) >= len(a["sources"]) for a in answers)
    assert max(len(a["ranked_chunks"]) for a in answers) > 3
    code = main(
        [
            "eval",
            "--questions",
            str(EXAMPLES / "questions.jsonl"),
            "--docs",
            str(docs),
            "--path",
            "base",
            "--json",
            *tiny,
        ]
    )
    closed_book = json.loads(capsys.readouterr().out)
    assert code == 0 and closed_book["path"] == "base" and "hit@3" not in closed_book["metrics"]


def test_eval_closed_set_questions_report_choice_metrics(
    docs: Path, tiny_lm_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps({"question": "Are DVDs lent for 7 days?", "answers": ["yes"], "choices": ["yes", "no", "maybe"]})
        + "\n"
        + json.dumps({"question": "Is the library open on Mondays?", "answers": ["no"], "choices": ["yes", "no"]})
        + "\n"
    )
    tiny = ["--set", f"llm.model={tiny_lm_path}", "--set", "llm.max_new_tokens=3"]
    assert main(["ingest", str(docs), *tiny]) == 0
    capsys.readouterr()
    assert main(["eval", "--questions", str(questions), "--limit", "1", "--seed", "3", "--json", *tiny]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["questions"] == 1 and results["sample"] == {"file": str(questions), "limit": 1, "seed": 3}
    metrics = results["metrics"]
    assert {"choice_accuracy", "macro_f1", "unparseable"} <= set(metrics)
    assert metrics["majority_baseline"]["accuracy"] == 1.0  # one sampled question: its label is the majority
    assert "hit@3" not in metrics  # no gold documents given
    assert main(["eval", "--questions", str(questions), "--path", "base", "--json", *tiny]) == 0
    closed_book = json.loads(capsys.readouterr().out)
    assert closed_book["path"] == "base" and closed_book["questions"] == 2 and "hit@3" not in closed_book["metrics"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"question": "no answers"}', "missing the 'answers' field"),
        ('{"question": "open?", "answers": ["sometimes"], "choices": ["yes", "no"]}', "not one of the choices"),
        ('{"question": "open?", "answers": ["yes"], "choices": []}', "'choices' is an empty list"),
    ],
)
def test_eval_bad_question_file_names_the_line(
    line: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "ok?", "answers": ["yes"], "choices": ["yes", "no"]}\n' + line + "\n")
    assert main(["eval", "--questions", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: " in err and message in err


def test_eval_retrieval_only_scores_settings_without_the_lm(
    docs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import models.generate
    import ragtune.compose

    def no_lm(*args, **kwargs):
        raise AssertionError("retrieval-only loaded the LM")

    monkeypatch.setattr(models.generate, "load_language_model", no_lm)
    monkeypatch.setattr(ragtune.compose, "build_generator", no_lm)
    no_model = ["--set", f"llm.model={tmp_path / 'no-such-model'}"]
    assert main(["ingest", str(docs), *no_model]) == 0
    # One question with two gold documents, one with none (left out of the scoring, counted).
    questions = tmp_path / "q.jsonl"
    lines = (EXAMPLES / "questions.jsonl").read_text().splitlines()
    extra = [
        {"id": "two", "question": "How long can I borrow a DVD?", "answers": ["7 days"],
         "docs": ["library-cards.md", "borrowing-rules.txt"]},
        {"id": "none", "question": "Is there wifi?", "answers": ["yes"]},
    ]  # fmt: skip
    questions.write_text("\n".join(lines + [json.dumps(e) for e in extra]) + "\n")
    capsys.readouterr()
    out = tmp_path / "retrieval"
    args = ["eval", "--questions", str(questions), "--docs", str(docs), "--retrieval-only", "-o", str(out), *no_model]
    assert main([*args, "--json"]) == 0, capsys.readouterr().err
    results = json.loads(capsys.readouterr().out)
    assert results == json.loads((out / "results.json").read_text())
    assert results["questions"] == 8 and results["scored_questions"] == 7 and results["depth"] == 10
    assert results["backends"] == {"index": "hnswlib", "llm": "transformers (llm.backend=auto)"}
    assert results["missing_gold_files"] == 0
    dense = results["settings"]["dense"]
    assert dense["status"] == "done" and dense["overrides"] == ["rag.retriever=dense"]
    for k in (1, 5, 10):
        assert dense["metrics"][f"doc_hit@{k}"] == {"mean": 1.0, "ci95": [1.0, 1.0], "n": 7}
        assert dense["metrics"][f"evidence_hit@{k}"]["mean"] == 1.0
    assert dense["metrics"]["mrr"]["mean"] == 1.0
    assert 0 < dense["latency"]["retrieve_s"]["p50"] <= dense["latency"]["retrieve_s"]["p95"]
    # Every registered retriever is a setting; one that cannot run is listed with why, never dropped.
    from rag.retrieve import RETRIEVERS

    assert set(RETRIEVERS) <= {label.split()[0] for label in results["settings"]}
    skipped = {label: e["reason"] for label, e in results["settings"].items() if e["status"] == "skipped"}
    assert all(skipped.values()) and any("rerank" in label for label in skipped)
    assert results["winner"]["label"] in results["settings"] and results["metric"] == "evidence_hit@5"
    assert set(results["differences"]) == {
        label for label, e in results["settings"].items() if e["status"] == "done"
    } - {results["winner"]["label"]}

    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "7 of 8 questions name gold documents" in printed and "evidence hit" in printed
    assert "best on evidence hit@5:" in printed and "skipped (" in printed

    assert main([*args, "--path", "rag"]) == 2
    assert "--path and --retrieval-only" in capsys.readouterr().err
