"""The verdict is written from the numbers: change the numbers and it changes with them."""

from __future__ import annotations

import copy

import pytest

from ragtune.compare.metrics import paired_difference
from ragtune.compare.verdict import verdict


def scored(mean: float, low: float, high: float, n: int = 100) -> dict:
    return {"mean": mean, "ci95": [low, high], "n": n}


def entry(mean: float, low: float, high: float, p50: float, one_off: float = 0.0, **metrics) -> dict:
    return {
        "status": "done",
        "metrics": {"contains": scored(mean, low, high), **metrics},
        "latency": {"total_s": {"p50": p50, "p95": p50 * 2}},
        "cost": {"one_off_s": one_off, "index_build_s": None, "synth_s": None, "training_s": one_off or None},
    }


def results(paths: dict, differences: dict, update: dict | None = None) -> dict:
    return {
        "primary_metric": "contains",
        "paths": paths,
        "differences": differences,
        "update": update,
        "complete": True,
        "unfinished": [],
        "stopped_by": None,
    }


RAG_WINS = results(
    {"rag": entry(0.80, 0.72, 0.88, p50=1.2), "finetune": entry(0.40, 0.30, 0.50, p50=0.4, one_off=840)},
    {"finetune - rag": scored(-0.40, -0.52, -0.28)},
)


def test_a_clear_winner_is_named_with_its_margin_and_interval() -> None:
    text = verdict(RAG_WINS)
    assert text.startswith("On these 100 questions rag scores best: 80.0% answer contained (95% CI 72.0%-88.0%).")
    assert "rag is ahead by +40.0 points over finetune (paired 95% CI +28.0 to +52.0)" in text
    assert "finetune answers 3.0x faster than rag (median 0.40 s against 1.20 s" in text
    assert "finetune 14.0 min of training" in text
    assert text.endswith("For this data: rag, the only path at the top once the intervals are taken into account.")


def test_the_verdict_follows_the_numbers_when_they_change() -> None:
    flipped = copy.deepcopy(RAG_WINS)
    flipped["paths"]["finetune"]["metrics"]["contains"] = scored(0.90, 0.84, 0.96)
    flipped["differences"]["finetune - rag"] = scored(0.10, 0.03, 0.17)
    text = verdict(flipped)
    assert "finetune scores best: 90.0%" in text and "+10.0 points over rag" in text
    assert "For this data: finetune" in text


def test_an_overlapping_difference_is_called_noise_and_the_cheaper_path_recommended() -> None:
    tied = copy.deepcopy(RAG_WINS)
    tied["paths"]["finetune"]["metrics"]["contains"] = scored(0.78, 0.70, 0.86)
    tied["differences"]["finetune - rag"] = scored(-0.02, -0.09, 0.05)
    text = verdict(tied)
    assert "within noise" in text and "finetune (+2.0 points, CI -5.0 to +9.0)" in text
    # Tied on accuracy: rag needs no training, so it is the recommendation though it answers slower.
    assert "For this data: rag. It cannot be separated from finetune on accuracy and needs the least work" in text
    assert "(0.0 s, against 14.0 min for finetune)." in text and "at least as fast" not in text


def test_the_majority_answer_is_the_bar_for_closed_sets() -> None:
    closed = copy.deepcopy(RAG_WINS)
    closed["paths"]["rag"]["metrics"]["majority_baseline"] = {"label": "yes", "accuracy": 0.9}
    assert "Every path is below always answering 'yes' (90.0% of this sample)." in verdict(closed)
    closed["paths"]["rag"]["metrics"]["majority_baseline"]["accuracy"] = 0.6
    assert "rag beats always answering 'yes' (60.0% of this sample)." in verdict(closed)


def test_update_costs_and_forgetting_are_reported() -> None:
    update = {
        "added_documents": 2,
        "paths": {
            "rag": {"how": "incremental ingest of the new documents", "update_s": 3.1, "new": scored(1.0, 1.0, 1.0, 3),
                    "old": scored(0.8, 0.72, 0.88), "old_before": scored(0.8, 0.72, 0.88)},
            "finetune": {"how": "retrained on the old and the new training pairs", "update_s": 312.0,
                         "new": scored(0.33, 0.0, 1.0, 3), "old": scored(0.30, 0.2, 0.4),
                         "old_before": scored(0.40, 0.30, 0.50)},
        },
    }  # fmt: skip
    text = verdict({**RAG_WINS, "update": update})
    assert "Adding 2 new documents took rag 3.1 s (incremental ingest of the new documents), finetune 5.2 min" in text
    assert "new questions were answered by rag 100.0%, finetune 33.0%" in text
    assert "On the old questions finetune fell from 40.0% to 30.0%." in text


def test_nothing_right_and_nothing_finished_are_said_plainly() -> None:
    zero = copy.deepcopy(RAG_WINS)
    for path in zero["paths"].values():
        path["metrics"]["contains"] = scored(0.0, 0.0, 0.0)
    assert verdict(zero).startswith("No path got any of these 100 questions right")
    none = copy.deepcopy(RAG_WINS)
    for path in none["paths"].values():
        path["status"] = "not run"
    assert verdict(none) == "No path has finished yet, so there is nothing to compare."


def test_paired_difference_keeps_the_pairing() -> None:
    result = paired_difference([1, 1, 0, 0], [0, 1, 0, 0])
    assert result["mean"] == pytest.approx(0.25) and result["n"] == 4
    # Differences [1, 0, 0, 0]: a resample's mean is k/4 with k ~ Binomial(4, 1/4). P(k = 0) = 0.32 > 2.5%,
    # so the low end is 0.0; P(k = 4) = 0.4% < 2.5% < P(k >= 3) = 5.1%, so the high end is 0.75.
    assert result["ci95"] == [0.0, 0.75]
    same = paired_difference([1, 0, 1, 0, 1], [1, 0, 1, 0, 1])
    assert same["mean"] == 0 and same["ci95"] == [0.0, 0.0]  # identical answers: no difference at all
    with pytest.raises(ValueError, match="same questions"):
        paired_difference([1, 0], [1])
