"""Retrieval scored per chunk: hand-made rankings, answers and gold documents, exact values."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from models.answer import Answer
from ragtune.compare.evaluate import aggregate, score
from ragtune.compare.evidence import holds_answer, ks_within, score_ranking, summarise
from ragtune.compare.questions import Question

GOLD = "/d/gold.txt"
OTHER = "/d/other.txt"
# The answer "1912" is in an unrelated article first: only the gold article's chunk is evidence.
RANKING = [
    (OTHER, "The ship sailed in 1912 from Southampton."),
    (GOLD, "Its maiden voyage began in April."),
    (GOLD, "The   company was founded\nin 1912 by its owner."),
    (OTHER, "Nothing here."),
    (OTHER, "Nor here."),
    (GOLD, "In 1912 it sank."),
]


def test_holds_answer_is_case_and_whitespace_insensitive_containment():
    assert holds_answer("Founded in  NEW\tyork City", ["new york"])
    assert holds_answer("costs $45 per year", ["$45"])  # punctuation kept: quoted evidence
    assert holds_answer("in 1912", ["1912"]) and holds_answer("in 19120", ["1912"])  # containment, not words
    assert not holds_answer("founded in 1913", ["1912", "nineteen twelve"])
    assert not holds_answer("anything", ["  ", "\n"])  # an empty answer never matches


def test_score_ranking_counts_evidence_only_in_gold_chunks():
    scores = score_ranking(RANKING, {GOLD}, ["1912"], ks=(1, 2, 3, 5, 10))
    assert scores == {
        "doc@1": 0.0,
        "evidence@1": 0.0,  # 1912 is at rank 1, but in another article
        "doc@2": 1.0,
        "evidence@2": 0.0,  # the gold chunk at rank 2 lacks the answer
        "doc@3": 1.0,
        "evidence@3": 1.0,  # rank 3: gold article and the answer, despite case and spacing
        "doc@5": 1.0,
        "evidence@5": 1.0,
        "doc@10": 1.0,
        "evidence@10": 1.0,  # a ranking shorter than k is scored as it is
        "rr": 0.5,  # first gold chunk at rank 2
    }


def test_several_gold_documents_and_misses():
    both = score_ranking(RANKING, {OTHER, GOLD}, ["Southampton"], ks=(1,))
    assert both == {"doc@1": 1.0, "evidence@1": 1.0, "rr": 1.0}
    missed = score_ranking(RANKING, {"/d/absent.txt"}, ["1912"], ks=(1, 5))
    assert missed == {"doc@1": 0.0, "evidence@1": 0.0, "doc@5": 0.0, "evidence@5": 0.0, "rr": 0.0}
    assert score_ranking([], {GOLD}, ["x"], ks=(1,)) == {"doc@1": 0.0, "evidence@1": 0.0, "rr": 0.0}
    with pytest.raises(ValueError, match="gold should name at least one document"):
        score_ranking(RANKING, set(), ["1912"])
    with pytest.raises(ValueError, match="every k should be at least 1"):
        score_ranking(RANKING, {GOLD}, ["1912"], ks=(0,))


def test_summarise_names_and_means():
    rows = [score_ranking(RANKING, {GOLD}, ["1912"]), score_ranking(RANKING, {OTHER}, ["1912"])]
    metrics = summarise(rows)
    assert list(metrics) == [
        "doc_hit@1", "doc_hit@5", "doc_hit@10", "evidence_hit@1", "evidence_hit@5", "evidence_hit@10", "mrr"
    ]  # fmt: skip
    assert metrics["doc_hit@1"]["mean"] == 0.5 and metrics["evidence_hit@1"]["mean"] == 0.5
    assert metrics["evidence_hit@5"]["mean"] == 1.0 and metrics["mrr"]["mean"] == 0.75
    assert metrics["mrr"]["n"] == 2 and len(metrics["mrr"]["ci95"]) == 2
    assert ks_within(10) == (1, 5, 10) and ks_within(5) == (1, 5) and ks_within(3) == (1,)


def source(path: str, text: str, chunk: int = 0) -> SimpleNamespace:
    return SimpleNamespace(path=path, text=text, chunk=chunk)


def answer(text: str, sources: list[SimpleNamespace]) -> Answer:
    return Answer(question="When?", text=text, sources=sources, timings={"total_s": 0.5})


def test_eval_scores_the_deeper_ranking_and_the_answer_on_what_it_read():
    ranking = [source(p, t, i) for i, (p, t) in enumerate(RANKING)]
    question = Question(id="t", question="When?", answers=("1912",), docs=("gold.txt",))
    # The answer read the first 3 chunks; retrieval is scored on all 6.
    scored = score(question, answer("In 1912.", ranking[:3]), [GOLD], True, ranking)
    assert scored.hit == 1.0 and scored.rr == 0.5 and scored.contains == 1.0
    assert scored.retrieval["evidence@1"] == 0.0 and scored.retrieval["evidence@5"] == 1.0
    assert scored.ranked_chunks[:2] == [f"{OTHER}#0", f"{GOLD}#1"]
    other = score(question, answer("No idea.", ranking[:1]), [GOLD], True, ranking[:1])
    assert other.hit == 0.0 and other.retrieval["doc@10"] == 0.0 and other.rr == 0.0
    closed = score(question, answer("1912", []), [], False)
    assert closed.hit is None and closed.retrieval is None and closed.ranked_chunks == []
    metrics = aggregate([question] * 3, [scored, other, closed], top_k=3)["metrics"]
    assert metrics["hit@3"]["mean"] == 0.5 and metrics["hit@3"]["n"] == 2
    assert metrics["evidence_hit@5"]["mean"] == 0.5 and metrics["doc_hit@1"]["mean"] == 0.0
    assert metrics["mrr"]["mean"] == 0.25
