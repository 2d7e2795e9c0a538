"""The retrieval keys of the config: choices and ranges are checked, each error naming its key."""

import re

import pytest

from models.config import load_config
from models.errors import ConfigError


def test_retrieval_defaults() -> None:
    rag = load_config().rag
    assert (rag.retriever, rag.contextual, rag.candidates, rag.min_score) == ("hybrid", False, 20, 0.2)
    assert rag.question_match == 0.25
    assert (rag.hybrid.method, rag.hybrid.rrf_k, rag.hybrid.dense_weight) == ("weighted", 60, 0.5)
    assert (rag.rerank.model, rag.rerank.candidates, rag.rerank.device) == (None, 20, "auto")


def test_nested_retrieval_overrides() -> None:
    rag = load_config(None, ["rag.retriever=hybrid", "rag.hybrid.method=weighted", "rag.rerank.model=/m"]).rag
    assert (rag.retriever, rag.hybrid.method, rag.rerank.model) == ("hybrid", "weighted", "/m")


@pytest.mark.parametrize(
    "override,message",
    [
        ("rag.retriever=bm25", "rag.retriever (--set rag.retriever=bm25): should be one of dense, lexical, hybrid"),
        ("rag.hybrid.method=sum", "rag.hybrid.method (--set rag.hybrid.method=sum): should be one of rrf, weighted"),
        ("rag.hybrid.rrf_k=0", "rag.hybrid.rrf_k: should be positive, got 0"),
        ("rag.hybrid.dense_weight=1.5", "rag.hybrid.dense_weight: should be in [0, 1], got 1.5"),
        ("rag.candidates=0", "rag.candidates: should be positive, got 0"),
        ("rag.question_match=1.5", "rag.question_match: should be in [0, 1] (a chance; 0 turns the check"),
        ("rag.question_match=-0.1", "rag.question_match: should be in [0, 1] (a chance; 0 turns the check"),
        ("rag.rerank.candidates=-2", "rag.rerank.candidates: should be positive, got -2"),
        ("rag.rerank.model=' '", "rag.rerank.model: should be a folder or null"),
        ("rag.contextual=maybe", "rag.contextual (--set rag.contextual=maybe): should be bool"),
        ("rag.hybrid.weight=1", "unknown key rag.hybrid.weight"),
    ],
)
def test_bad_retrieval_values_name_their_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])
