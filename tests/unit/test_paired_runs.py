"""scripts/paired_runs.py: two answer folders paired by question id, and the errors that name the bad input."""

import json
from pathlib import Path

import pytest

from ragtune.compare.paired_runs import main, pair_runs


def folder(tmp_path: Path, name: str, choices: dict[str, str]) -> Path:
    out = tmp_path / name
    out.mkdir()
    rows = [
        {"id": i, "answers": ["yes"], "choice": c, "prediction": c, "contains": float(c == "yes")}
        for i, c in choices.items()
    ]
    (out / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def test_runs_are_paired_by_id_on_the_questions_both_answered(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = folder(tmp_path, "a", {"q1": "yes", "q2": "yes", "q3": "no", "q4": "yes", "extra": "no"})
    b = folder(tmp_path, "b", {"q4": "no", "q3": "no", "q2": "yes", "q1": "maybe"})  # another order
    result = pair_runs(a, b)
    assert result["metric"] == "choice_accuracy" and result["questions"] == 4
    assert (result["only_in_a"], result["only_in_b"]) == (1, 0)
    assert result["a"]["mean"] == 0.75 and result["b"]["mean"] == 0.25
    assert result["a_minus_b"]["mean"] == 0.5 and result["a_minus_b"]["n"] == 4
    assert result["same_answer"]["mean"] == 0.5 and result["same_answer_field"] == "choice"  # q2 and q3
    assert main([str(a), str(b)]) == 0
    printed = capsys.readouterr().out
    assert "4 questions answered by both (1 only in A, 0 only in B); choice accuracy" in printed
    assert "A - B paired: +50.0 points" in printed and "the same choice: 50.0%" in printed


def test_a_folder_without_answers_or_with_a_bad_line_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = folder(tmp_path, "good", {"q1": "yes"})
    assert main([str(good), str(tmp_path / "missing")]) == 2
    assert f"{tmp_path / 'missing' / 'answers.jsonl'}: not found" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "answers.jsonl").write_text('{"id": "q1"}\nnot json\n')
    assert main([str(good), str(bad)]) == 2
    assert f"{bad / 'answers.jsonl'}:2: not an answers.jsonl row" in capsys.readouterr().err
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "answers.jsonl").write_text('{"id": "q1"}\n')  # an id, but no answer fields
    assert main([str(good), str(bare), "--metric", "contains"]) == 2
    assert f"{bare / 'answers.jsonl'}: a row has no 'contains', which contains needs" in capsys.readouterr().err
    other = folder(tmp_path, "other", {"q9": "yes"})
    assert main([str(good), str(other)]) == 2
    assert "answered no question in common" in capsys.readouterr().err
