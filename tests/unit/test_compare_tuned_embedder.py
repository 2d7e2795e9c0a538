"""compare's rag-tuned-embedder path: answers as rag, costs its embedder's training and index, weighed like the rest."""

from __future__ import annotations

import pytest

from models.config import load_config
from models.errors import ConfigError, InputError
from ragtune.compare import keys
from ragtune.compare.figures import figure_rows
from ragtune.compare.results import cost_of
from ragtune.compare.spec import PATHS, TUNED_EMBEDDER, path_mode, retrieving, uses_documents
from ragtune.compare.tuned_embedder import check_tuned_embedder
from ragtune.compare.verdict import verdict


def test_the_path_answers_as_rag_and_is_not_a_mode_of_its_own() -> None:
    from models.modes import MODES

    assert TUNED_EMBEDDER in PATHS and TUNED_EMBEDDER not in MODES
    assert path_mode(TUNED_EMBEDDER).name == "rag" and uses_documents(TUNED_EMBEDDER)
    assert retrieving((TUNED_EMBEDDER,)) and not retrieving(("base", "finetune"))
    with pytest.raises(ConfigError, match="'tuned'"):
        path_mode("tuned")


def test_the_embedder_key_follows_the_documents_and_the_training_settings_only() -> None:
    config = load_config(None)
    key = keys.embedder_key(config, "tree-a")
    assert key == keys.embedder_key(load_config(None, ["llm.max_new_tokens=5"]), "tree-a")  # the LM writes no query
    assert key != keys.embedder_key(config, "tree-b")
    assert key != keys.embedder_key(load_config(None, ["finetune.embedder.max_steps=2"]), "tree-a")
    assert key != keys.embedder_key(load_config(None, ["rag.chunk_tokens=48"]), "tree-a")
    lm = load_config(None, ["finetune.embedder.queries=lm"])
    assert keys.embedder_key(lm, "tree-a") != keys.embedder_key(
        load_config(None, ["finetune.embedder.queries=lm", "llm.max_new_tokens=5"]), "tree-a"
    )
    # An index built with a trained embedder is named by its fingerprint too; a plain index keeps its old key.
    assert keys.index_key(config, ["t"], "abc") != keys.index_key(config, ["t"], "abd") != keys.index_key(config, ["t"])


def test_an_onnx_embedder_is_refused_before_training() -> None:
    onnx = load_config(None, ["embedder.backend=onnx"])
    check_tuned_embedder(onnx, ("rag",))
    with pytest.raises(InputError, match="embedder.backend=torch"):
        check_tuned_embedder(onnx, ("rag", TUNED_EMBEDDER))


RECORDS = {
    "index": {"index": "compare-a", "index_build_s": 10.0, "chunks": 40, "peak_rss_mb": 500, "disk_bytes": 1000},
    "train:embedder": {"embedder": "compare-emb-x", "training_s": 120.0, "queries_s": 2.0, "queries": "sentence",
                       "steps": 30, "peak_rss_mb": 900, "disk_bytes": 90_000, "reused": True},
    "index:embedder": {"index": "compare-b", "index_build_s": 12.0, "chunks": 40, "peak_rss_mb": 600,
                       "disk_bytes": 2000, "reused": False, "embedder": "compare-emb-x"},
    TUNED_EMBEDDER: {"wall_s": 30.0, "peak_rss_mb": 700},
}  # fmt: skip


def test_its_cost_is_the_embedder_training_and_its_own_index() -> None:
    cost = cost_of(TUNED_EMBEDDER, RECORDS)
    assert cost["one_off_s"] == 132.0 and cost["training_s"] == 120.0 and cost["index_build_s"] == 12.0
    assert cost["embedder"] == "compare-emb-x" and cost["embedder_queries_s"] == 2.0 and cost["training_steps"] == 30
    assert cost["peak_rss_mb"] == 900 and cost["disk_bytes"] == 92_000 and cost["reused"] == ["compare-emb-x"]
    assert cost["adapter"] is None and cost["trainable_params"] is None
    assert cost_of("rag", RECORDS)["one_off_s"] == 10.0  # rag's index is not the tuned one


def entry(mean: float, low: float, high: float, cost: dict) -> dict:
    return {
        "status": "done",
        "metrics": {"contains": {"mean": mean, "ci95": [low, high], "n": 100}, "refusals": 0},
        "latency": {"total_s": {"p50": 1.0, "p95": 2.0}, "first_token_s": {"p50": 0.5, "p95": 0.6},
                    "tokens_per_s": {"p50": None}},
        "cost": cost,
    }  # fmt: skip


def results(tuned_mean: float, low: float, high: float, diff: dict) -> dict:
    return {
        "primary_metric": "contains",
        "paths": {
            "rag": entry(0.70, 0.61, 0.79, cost_of("rag", RECORDS)),
            TUNED_EMBEDDER: entry(tuned_mean, low, high, cost_of(TUNED_EMBEDDER, RECORDS)),
        },
        "differences": {f"rag - {TUNED_EMBEDDER}": diff},
        "update": None,
        "complete": True,
        "unfinished": [],
        "stopped_by": None,
    }


def test_the_verdict_weighs_it_by_the_same_rule_as_the_other_paths() -> None:
    # Tied on accuracy: rag needs less work (no embedder training), so it is recommended.
    tied = verdict(results(0.72, 0.63, 0.81, {"mean": -0.02, "ci95": [-0.06, 0.02], "n": 100}))
    assert f"{TUNED_EMBEDDER} 12.0 s of indexing + 2.0 min of embedder training" in tied
    assert f"For this data: rag. It cannot be separated from {TUNED_EMBEDDER}" in tied
    assert f"(10.0 s, against 2.2 min for {TUNED_EMBEDDER})" in tied
    # Clearly ahead: the tuned embedder is the recommendation despite its training.
    ahead = verdict(results(0.85, 0.78, 0.92, {"mean": -0.15, "ci95": [-0.21, -0.09], "n": 100}))
    assert f"For this data: {TUNED_EMBEDDER}, the only path at the top" in ahead


def test_the_figures_name_the_trained_embedder_beside_the_other_costs() -> None:
    rows = dict(figure_rows(results(0.72, 0.63, 0.81, {"mean": -0.02, "ci95": [-0.06, 0.02], "n": 100})))
    assert rows["trained embedder"] == ["", "compare-emb-x"]
    assert rows["embedder queries (part of training)"] == ["", "2.0 s"]
    assert rows["trainable parameters"] == ["0", "all of the embedder's"]
    assert rows["training"] == ["", "2.0 min"] and "disk (index + adapter or embedder)" in rows
