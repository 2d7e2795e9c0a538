"""eval.judge.model end to end: a judge that cannot load stops eval and compare first; judged figures agree
with the per-question verdicts written beside them (the tiny LM, and the packaged 135M model as judge)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtune.cli import main
from ragtune.compare.metrics import cohen_kappa, ranking_auc
from tests.conftest import EXAMPLES

MISSING = ["--set", "eval.judge.model=no-such-judge"]


def mixed_questions(tmp_path: Path, each: int) -> Path:
    """`each` answerable and `each` unanswerable questions of the shipped example."""
    lines = []
    for name in ("questions.jsonl", "unanswerable.jsonl"):
        lines += (EXAMPLES / name).read_text().splitlines()[:each]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_eval_stops_on_a_judge_that_cannot_load_before_anything_else(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # No index exists: an eval that went on past the judge would fail on that instead.
    code = main(["eval", "--questions", str(EXAMPLES / "questions.jsonl"), *MISSING])
    err = capsys.readouterr().err
    assert code == 2 and "eval.judge.model='no-such-judge'" in err and "or null" in err
    assert "index" not in err.lower()


def test_compare_stops_on_a_judge_that_cannot_load_before_any_step(
    docs: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "report"
    args = ["compare", "--docs", str(docs), "--questions", str(EXAMPLES / "questions.jsonl"), "--paths", "base,rag"]
    assert main([*args, "-o", str(out), *MISSING]) == 2
    assert "eval.judge.model='no-such-judge'" in capsys.readouterr().err
    assert not (out / "phases").exists() and not (out / "logs").exists()  # no index built, no path answered


def check_judged(metrics: dict, rows: list[dict]) -> list[dict]:
    """The judged figures recomputed from the per-question verdicts; returns the judged rows."""
    judged = [r for r in rows if r["judge_supported"] is not None]
    shown = [r for r in judged if not r["refused"]]
    assert metrics["judge_agreement"]["n"] == len(judged) and metrics["judged_faithfulness"]["n"] == len(shown)
    if judged:
        agree = sum(r["judge_supported"] == r["grounded"] for r in judged) / len(judged)
        assert metrics["judge_agreement"]["mean"] == pytest.approx(agree)
        assert 0 <= metrics["judge_agreement"]["ci95"][0] <= agree <= metrics["judge_agreement"]["ci95"][1] <= 1
    if shown:
        faithful = sum(r["judge_supported"] for r in shown) / len(shown)
        assert metrics["judged_faithfulness"]["mean"] == pytest.approx(faithful) and 0 <= faithful <= 1
    kappa = cohen_kappa([r["judge_supported"] for r in judged], [r["grounded"] for r in judged])
    assert metrics["judge_kappa"] == (pytest.approx(kappa) if kappa is not None else None)
    margins = [r["judge_logprobs"]["yes"] - r["judge_logprobs"]["no"] for r in judged]
    auc = ranking_auc(margins, [r["grounded"] for r in judged])
    assert metrics["judge_auc"] == (pytest.approx(auc) if auc is not None else None)
    for r in judged:
        logprobs = r["judge_logprobs"]
        assert logprobs["yes"] <= 0 and logprobs["no"] <= 0
        assert r["judge_supported"] == (logprobs["yes"] > logprobs["no"])
    # Every written answer is judged, and each held-back draft; refusals the model wrote itself are not.
    for r in rows:
        written = not r["refused"] or (r["draft"] and "could not find the answer" not in r["draft"].lower())
        assert (r["judge_supported"] is not None) == bool(written), r
    return judged


def test_eval_with_the_tiny_lm_as_judge_writes_verdicts_and_figures(
    docs: Path, tiny_lm_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    tiny = ["--set", f"llm.model={tiny_lm_path}", "--set", "llm.max_new_tokens=4", "--set", "llm.dtype=float32"]
    tiny += ["--set", f"eval.judge.model={tiny_lm_path}"]
    assert main(["ingest", str(docs), *tiny]) == 0
    capsys.readouterr()
    out = tmp_path / "run"
    questions = mixed_questions(tmp_path, 2)
    assert main(["eval", "--questions", str(questions), "--docs", str(docs), "-o", str(out), *tiny]) == 0
    printed = capsys.readouterr().out
    assert f"judge_model      {tiny_lm_path} (transformers)" in printed and "judge_agreement" in printed
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    # The tiny LM writes random words: every answer is held back as unsupported, and its draft judged.
    assert check_judged(metrics, rows) and metrics["judged_faithfulness"]["n"] == sum(not r["refused"] for r in rows)
    # A closed-book path reads no passages: nothing to judge, the judge is not loaded.
    assert main(["eval", "--questions", str(questions), "--path", "base", "--json", *tiny]) == 0
    assert "judge_model" not in json.loads(capsys.readouterr().out)["metrics"]


@pytest.mark.slow
def test_compare_with_the_135m_model_as_judge_on_the_shipped_example(
    docs: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    smol = ["--set", "llm.model=smollm2-135m-instruct", "--set", "eval.judge.model=smollm2-135m-instruct"]
    out = tmp_path / "report"
    questions = mixed_questions(tmp_path, 3)
    args = ["compare", "--docs", str(docs), "--questions", str(questions), "--paths", "base,rag", "-o", str(out)]
    assert main([*args, *smol]) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    rag, base = results["paths"]["rag"], results["paths"]["base"]
    assert rag["metrics"]["judge_model"].startswith("smollm2-135m-instruct (")
    assert "judge_model" not in base["metrics"] and "judged_faithfulness" not in base["metrics"]
    rows = [json.loads(line) for line in Path(rag["answers"]).read_text().splitlines()]
    judged = check_judged(rag["metrics"], rows)
    assert len(judged) >= 3  # the three answerable questions at least: none of them was refused by this model
    report = (out / "report.md").read_text()
    for label in ("judged faithfulness (answers", "judge agrees with the lexical check", "judge-lexical Cohen's kappa"):
        assert label in report, label
    assert "smollm2-135m-instruct" in (out / "report.html").read_text()
