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
    assert results["latency"]["total_s"]["p50"] > 0 and results["path"] == "rag"
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [a["id"] for a in answers] == [f"q{i}" for i in range(1, 7)]
    # Each figure is the mean of the per-question scores written beside it.
    for metric, field in (("f1", "f1"), ("em", "em"), ("contains", "contains"), ("mrr", "rr")):
        assert metrics[metric]["mean"] == pytest.approx(sum(a[field] for a in answers) / 6), metric
    assert metrics["refusals"] == sum(a["refused"] for a in answers)
    assert all(a["sources"] and all(Path(s).is_relative_to(docs.resolve()) for s in a["sources"]) for a in answers)
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


def test_eval_bad_question_file_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "ok?", "answers": ["yes"]}\n{"question": "no answers"}\n')
    assert main(["eval", "--questions", str(bad)]) == 2
    assert "q.jsonl:2" in capsys.readouterr().err
