"""bench/support_questions.py's choice of the question check: threshold rules and the logistic model, on rows
made here (no retrieval): the budget is kept, the model is fitted, cross-validation holds articles out."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from bench.support_questions import BUDGET, Flags, QuestionRule, choose, fit_logistic, mean


def rows(seed: int = 0) -> list[dict]:
    """Answerable questions whose passages hold their terms and come close, unanswerable ones that mostly do not,
    12 articles per part, overlapping enough that no check is perfect."""
    rng = random.Random(seed)
    made = []
    for part in ("dev", "test"):
        for n in range(240):
            kind = "answerable" if n % 2 else "unanswerable"
            on_topic = n % 120 != 1 if kind == "answerable" else n % 3 == 0  # 2 of 120 answerable are off it
            passage = "Tesla was born in Smiljan in 1856." if on_topic else "Edison died in 1931 in New Jersey."
            closest = rng.gauss(0.6 if kind == "answerable" else 0.4, 0.05)
            made.append(
                {
                    "id": f"{part}{n}",
                    "question": "When was Tesla born in Smiljan?",
                    "kind": kind,
                    "part": part,
                    "doc": f"{part}-{n % 12}.txt",
                    "passages": [passage],
                    "closest": closest,
                }
            )
    return made


def test_logistic_regression_recovers_the_direction_of_each_feature() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    y = (x[:, 0] - 2 * x[:, 1] + rng.normal(scale=0.5, size=400) > 0).astype(float)
    intercept, first, second = fit_logistic(x, y)
    assert first > 0 > second and abs(second) > abs(first) and abs(intercept) < 1


def test_each_choice_keeps_the_budget_on_the_rows_it_was_chosen_on() -> None:
    flags = Flags(rows())
    dev = [r for r in flags.rows if r["part"] == "dev"]
    rule = flags.best_rule(dev, BUDGET)
    assert mean(flags.by_rule(rule, "dev")["answerable"]) <= BUDGET
    model, floor = flags.fit(dev, BUDGET)
    flagged = flags.by_model(model, floor, "dev")
    assert mean(flagged["answerable"]) <= BUDGET < mean(flagged["unanswerable"])
    assert model.closest > 0 and model.named > 0  # closer and on-topic passages raise the chance
    strict = QuestionRule(share=0.2, floor=0.9, spelled=False, alike=0.8)
    assert mean(flags.by_rule(strict, "dev")["answerable"]) > 0.9  # almost nothing comes that close


def test_cross_validation_judges_every_dev_question_once_and_the_better_family_is_chosen() -> None:
    flags = Flags(rows())
    for family in ("rule", "model"):
        found = flags.cross_validated(family, BUDGET)
        assert len(found["answerable"]) == len(found["unanswerable"]) == 120
    # The family whose choice on all of dev flags more unanswerable dev questions within the budget.
    dev = [r for r in flags.rows if r["part"] == "dev"]
    model, floor = flags.fit(dev, BUDGET)
    rule = flags.best_rule(dev, BUDGET)
    chosen = choose(flags, rule, model, floor)
    assert chosen in ("rule", "model")
    by_model = mean(flags.by_model(model, floor, "dev")["unanswerable"])
    by_rule = mean(flags.by_rule(rule, "dev")["unanswerable"])
    assert chosen == ("model" if by_model > by_rule else "rule")


def test_the_benchmark_reads_saved_rows_and_reports_every_check(tmp_path) -> None:
    import json

    from bench.support_questions import main

    assert main(["--out", str(tmp_path), "--reuse"]) == 2  # nothing saved yet: said, not a traceback
    (tmp_path / "questions-retrieved.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows()))
    assert main(["--out", str(tmp_path), "--reuse", "--curve", str(tmp_path / "curve.png")]) == 0
    results = json.loads((tmp_path / "questions-checked.json").read_text())
    assert results["chosen"] in ("rule", "model") and set(results["fitted"]) >= {"intercept", "closest", "floor"}
    shipped = next(v for k, v in results["checks"].items() if k.startswith("shipped"))
    assert shipped["test"]["answerable"]["n"] == shipped["test"]["unanswerable"]["n"] == 120
    assert (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": 1\n', r"questions-retrieved.jsonl:1: not valid JSON"),
        ('{"id": "q1"}\n', r"questions-retrieved.jsonl:1: missing field\(s\) \['question'"),
        ("", "needs answerable and unanswerable questions in both dev and test"),
    ],
)
def test_a_damaged_saved_file_is_one_line_naming_it(tmp_path, capsys, content: str, message: str) -> None:
    from bench.support_questions import main

    (tmp_path / "questions-retrieved.jsonl").write_text(content)
    assert main(["--out", str(tmp_path), "--reuse"]) == 2
    said = capsys.readouterr()
    error = (said.out + said.err).strip()
    assert re.search(message, error) and "run without --reuse" in error and "Traceback" not in error


@pytest.mark.parametrize("budget", ["0", "1.5", "x"])
def test_a_budget_outside_0_to_1_is_refused_by_name(capsys, budget: str) -> None:
    from bench.support_questions import main

    with pytest.raises(SystemExit) as stopped:
        main(["--reuse", "--budget", budget])
    assert stopped.value.code == 2 and "--budget: should be a share above 0 and below 1" in capsys.readouterr().err
