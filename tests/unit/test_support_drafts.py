"""The support calibration's drafts file: each bad line is a one-line error naming the file, the line and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.support_checks import DraftsError, curve, lm_rules, measure, read_drafts, shipped_rule, threshold_rule

ROW = {
    "id": "q1",
    "question": "When was Tesla born?",
    "part": "dev",
    "kind": "answerable",
    "answers": ["1856"],
    "text": "Tesla was born in 1856. [1]",
    "refused": False,
    "sources": [{"number": 1, "path": "tesla.txt", "text": "Nikola Tesla was born in 1856.", "scores": {}}],
}


def write(path: Path, *rows: object) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({**ROW, "answer": "1856"}, r":2: unknown field\(s\) \['answer'\]"),
        ({k: v for k, v in ROW.items() if k != "text"}, r":2: missing field\(s\) \['text'\]"),
        ({**ROW, "answers": []}, ":2: an answerable question with no 'answers'"),
        ({**ROW, "kind": "maybe"}, ":2: 'kind' should be answerable or unanswerable"),
        ("{not json", ":2: not valid JSON"),
    ],
)
def test_a_bad_draft_line_is_named(tmp_path: Path, row: object, message: str) -> None:
    path = write(tmp_path / "drafts.jsonl", ROW, row)
    with pytest.raises(DraftsError, match=message) as caught:
        read_drafts(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_good_drafts_are_measured(tmp_path: Path) -> None:
    unanswerable = {**ROW, "id": "q2", "kind": "unanswerable", "answers": [], "question": "When did Edison die?"}
    rows = read_drafts(write(tmp_path / "drafts.jsonl", ROW, unanswerable))
    found = measure(rows, lambda row: True)  # nothing flagged: no false refusal, nothing refused
    assert found["false_refusal"]["mean"] == 0.0 and found["refusal_recall"]["mean"] == 0.0
    assert found["answer_contained"]["mean"] == 1.0


def test_the_lm_rules_read_the_signals_and_the_shipped_rule() -> None:
    likely = {**ROW, "closest": 0.9, "lm": {"tokens": 4, "context": -0.8, "empty": -8.0, "yes": -0.1, "no": -2.0}}
    unlikely = {**likely, "lm": {**likely["lm"], "context": -4.0}}  # mean -1.0 per token
    far = {**likely, "closest": 0.2}  # no retrieved sentence near the question: the shipped rule flags it
    refused = {**ROW, "refused": True, "text": "I could not find the answer in the documents."}  # nothing weighed
    rules = lm_rules()
    alone, shipped = rules["LM mean >= -0.4"], rules["LM mean >= -0.4, with the shipped rule"]
    assert alone(likely) and shipped(likely)
    assert not alone(unlikely) and not shipped(unlikely)
    assert alone(far) and not shipped(far)
    assert rules["LM pmi >= 1.5"](likely) and not rules["LM judge >= 0.0"](
        {**likely, "lm": {**likely["lm"], "yes": -3.0}}
    )
    assert rules["LM pmi >= 1.5"](refused)  # the model's own refusal counts as refused by `measure`, not here


def test_the_shipped_rule_and_its_curve(tmp_path: Path) -> None:
    near = {**ROW, "closest": 0.5}
    off_topic = {**near, "question": "When did Edison die?"}  # as close in meaning, but none of its terms held
    assert shipped_rule(near) and not shipped_rule({**near, "closest": 0.2}) and not shipped_rule(off_topic)
    assert shipped_rule({**off_topic, "closest": 0.9})  # a sentence that close outweighs the missing terms
    assert not shipped_rule(near, floor=1.0) and not shipped_rule({**near, "sources": []})
    assert threshold_rule(near) and not threshold_rule(off_topic) and not threshold_rule({**near, "closest": 0.44})
    unanswerable = {**near, "id": "q2", "kind": "unanswerable", "answers": [], "closest": 0.45}
    rows = [{**r, "part": part} for part in ("dev", "test") for r in (near, unanswerable)]
    curve(rows, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")
