"""Retrieval-only scoring: the settings table, winner selection and paired intervals on hand-made figures."""

from __future__ import annotations

import pytest

from models.config import load_config
from models.errors import ConfigError
from ragtune.compare.metrics import paired_difference
from ragtune.compare.questions import Question
from ragtune.compare.retrieval import (
    SettingRun,
    assemble,
    choose_winner,
    differences,
    run_setting,
    summary_lines,
)
from ragtune.compare.settings import Setting, first_stage, retrieval_settings


def test_the_table_follows_the_registry_and_the_rerank_key():
    stages = first_stage(["dense", "lexical", "hybrid", "colbert"])
    labels = [s.label for s in stages]
    assert labels[:2] == ["dense", "lexical"] and labels[-1] == "colbert"
    hybrids = [s for s in stages if s.label.startswith("hybrid")]
    assert len(hybrids) >= 3 and all(s.overrides[0] == "rag.retriever=hybrid" for s in hybrids)
    assert {o for s in hybrids for o in s.overrides if o.startswith("rag.hybrid.dense_weight=")} >= {
        "rag.hybrid.dense_weight=0.3",
        "rag.hybrid.dense_weight=0.7",
    }
    assert stages[-1].overrides == ("rag.retriever=colbert",)  # not in VARIANTS: scored as it is

    # No reranker configured: the first stages run as configured, and reranking is listed as skipped, with why.
    unset = retrieval_settings(["dense"], load_config(None))
    assert [(s.label, s.skip is None) for s in unset[:1]] == [("dense", True)]
    assert unset[-1].label == "rerank" and "rag.rerank.model is not set" in unset[-1].skip
    configured = retrieval_settings(["dense", "lexical"], load_config(None, ["rag.rerank.model=/models/ce"]))
    assert [(s.label, s.overrides) for s in configured] == [
        ("dense", ("rag.retriever=dense", "rag.rerank.model=null")),
        ("lexical", ("rag.retriever=lexical", "rag.rerank.model=null")),
        ("dense + rerank", ("rag.retriever=dense",)),
        ("lexical + rerank", ("rag.retriever=lexical",)),
    ]


def figures(evidence5: float, mrr: float, p50: float | None) -> dict:
    return {
        "metrics": {"evidence_hit@5": {"mean": evidence5}, "mrr": {"mean": mrr}},
        "latency": {"retrieve_s": {"p50": p50}},
    }


def test_winner_is_best_on_evidence_then_mrr_then_table_order():
    runs = {
        "dense": figures(0.60, 0.50, 0.010),
        "lexical": figures(0.70, 0.40, 0.002),
        "hybrid": figures(0.70, 0.45, 0.020),
        "rerank": {"metrics": None, "latency": None},  # skipped: never wins
    }
    assert choose_winner(runs) == "hybrid"  # tied on evidence hit@5, higher MRR
    runs["hybrid"] = figures(0.70, 0.40, 0.001)
    assert choose_winner(runs) == "lexical"  # tied on both: the earlier in the table, however fast the other
    assert choose_winner({"x": {"metrics": None}}) is None


def run_of(label: str, evidence5: list[float], latency: float = 0.01) -> SettingRun:
    rows = [{"doc@1": 1.0, "evidence@1": v, "doc@5": 1.0, "evidence@5": v, "rr": 1.0} for v in evidence5]
    return SettingRun(Setting(label, (f"rag.retriever={label}",)), rows, [latency] * len(rows), 1.0)


def test_paired_intervals_against_the_winner():
    dense = [1.0] * 30 + [0.0] * 70
    hybrid = [1.0] * 60 + [0.0] * 40  # dense's 30 hits plus 30 more: a paired, clearly real difference
    lexical = [0.0] * 30 + [1.0] * 25 + [0.0] * 45  # 25 hits on other questions
    runs = [run_of("dense", dense), run_of("hybrid", hybrid), run_of("lexical", lexical)]
    runs.append(SettingRun(Setting("rerank", (), skip="rag.rerank.model is not set"), skipped="not set"))
    results = assemble(runs)
    assert results["winner"]["label"] == "hybrid"
    assert results["winner"]["overrides"] == ["rag.retriever=hybrid"]
    assert results["winner"]["evidence_hit@5"]["mean"] == 0.6
    diffs = results["differences"]
    assert set(diffs) == {"dense", "lexical"}  # the skipped one has no figures to pair
    assert diffs["dense"] == paired_difference(dense, hybrid) and diffs["dense"]["mean"] == pytest.approx(-0.3)
    assert diffs["dense"]["ci95"][1] < 0  # every question dense gets, hybrid gets too: a real gap
    assert diffs["lexical"]["mean"] == pytest.approx(-0.35) and diffs["lexical"]["ci95"][1] < 0
    assert differences({"a": [1.0, 0.0], "b": [1.0, 1.0]}, "b") == {"a": paired_difference([1.0, 0.0], [1.0, 1.0])}
    skipped = results["settings"]["rerank"]
    assert skipped["status"] == "skipped" and skipped["reason"] == "not set" and skipped["metrics"] is None
    assert results["settings"]["dense"]["metrics"]["evidence_hit@5"]["mean"] == 0.3
    text = "\n".join(summary_lines(results))
    assert "rerank: skipped (not set)" in text and "best on evidence hit@5: hybrid 60.0%" in text
    assert "dense - hybrid: -30.0 points" in text and "worse" in text


def test_a_setting_that_cannot_be_configured_or_built_is_skipped_with_the_reason():
    question = Question(id="q", question="When?", answers=("1912",), docs=("a.txt",))

    def bad_config(overrides: list[str]):
        raise ConfigError("unknown key rag.hybrid.dense_weight; known keys: retriever")

    run = run_setting(Setting("hybrid", ("rag.hybrid.dense_weight=0.3",)), bad_config, None, [question], [["/a"]])
    assert run.skipped == "unknown key rag.hybrid.dense_weight; known keys: retriever" and run.rows == []
    known = run_setting(Setting("rerank", (), skip="no reranker"), bad_config, None, [question], [["/a"]])
    assert known.skipped == "no reranker"
