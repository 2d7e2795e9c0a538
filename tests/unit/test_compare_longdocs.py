"""The long-document benchmark's corpus selection and paired-difference rows, on a made-up dataset."""

from __future__ import annotations

import json
from pathlib import Path

from ragtune.compare.longdocs import paired_rows, select_corpus
from ragtune.compare.retrieval import SettingRun
from ragtune.compare.settings import Setting


def dataset(root: Path) -> Path:
    (root / "docs").mkdir(parents=True)
    for i in range(10):
        (root / "docs" / f"a{i}.txt").write_text(f"Article {i}\n\nText {i}.\n")
    questions = [
        {"id": f"q{i}-{j}", "question": f"About {i}?", "answers": [f"Text {i}"], "doc": f"a{i}.txt"}
        for i in range(4)  # articles 0-3 are gold, 4-9 distractors
        for j in range(3)
    ]
    (root / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    return root


def test_all_articles_or_half_gold_half_distractors(tmp_path: Path):
    data = dataset(tmp_path / "data")
    everything = select_corpus(data, tmp_path / "work", None, None, seed=0)
    assert everything.docs == data / "docs" and everything.articles == 10 and len(everything.questions) == 12
    subset = select_corpus(data, tmp_path / "work", 4, 5, seed=1)
    names = sorted(p.name for p in subset.docs.iterdir())
    assert subset.articles == 4 and subset.gold_articles == 2 and len(names) == 4
    assert len(subset.questions) == 5 and all(q.doc in names for q in subset.questions)
    again = select_corpus(data, tmp_path / "work", 4, 5, seed=1)  # seeded: the same folder and questions
    assert again.docs == subset.docs and again.questions == subset.questions


def run(label: str, hits: list[float], skipped: str | None = None) -> SettingRun:
    rows = [{"evidence@5": v} for v in hits]
    return SettingRun(Setting(label, ()), rows, [0.01] * len(rows), 1.0, skipped)


def test_paired_rows_name_what_is_compared_and_what_is_missing():
    plain = [run("dense", [0.0, 1.0, 0.0, 1.0]), run("hybrid rrf", [1.0, 1.0, 1.0, 1.0])]
    contextual = [run("dense", [1.0, 1.0, 0.0, 1.0]), run("hybrid rrf", [], skipped="no lexical index")]
    rows = dict(paired_rows({"plain chunks": plain, "contextual chunks": contextual}))
    assert rows["hybrid rrf - dense (plain chunks)"].startswith("+50.0 points (")
    assert rows["hybrid - dense (contextual chunks)"].startswith("not measured: no hybrid setting ran")
    assert rows["dense: contextual chunks - plain chunks"].startswith("+25.0 points (")
    only_dense = dict(paired_rows({"": [run("dense", [1.0, 0.0])]}))
    assert list(only_dense) == ["hybrid - dense"] and only_dense["hybrid - dense"].startswith("not measured")
