"""One suite for every retriever (rag.retrieve.RETRIEVERS), over the shipped example documents.

A new retriever passes by being added to BACKENDS: the same result shape, numbering, score order,
`rag.min_score` filtering (on the dense similarity, whichever retriever ranked) and early failure on a
missing index are then required of it.
"""

from pathlib import Path

import pytest

from models.config import load_config
from models.errors import IndexMissingError
from models.paths import index_dir
from rag.collection import current_generation
from rag.ingest import ingest
from rag.retrieve import RETRIEVERS, Retrieval, build_retriever

BACKENDS = ["dense", "lexical", "hybrid"]
STAGE = {"dense": "dense", "lexical": "lexical", "hybrid": "fused"}  # the key of each one's own score
QUESTION = "How much does a non-resident library card cost?"


def test_every_registered_retriever_is_under_contract() -> None:
    assert sorted(BACKENDS) == sorted(RETRIEVERS)


@pytest.fixture(params=BACKENDS)
def indexed(request: pytest.FixtureRequest, docs: Path, embedder):
    config = load_config(None, [f"rag.retriever={request.param}", "rag.top_k=4", "rag.min_score=-1"])
    ingest([docs], config, embedder, progress=False)
    return config


def test_sources_are_numbered_ranked_and_scored_per_stage(indexed, embedder) -> None:
    result = build_retriever(index_dir(indexed), indexed, embedder).retrieve(QUESTION)
    assert isinstance(result, Retrieval) and result.generation == current_generation(index_dir(indexed))
    assert [s.number for s in result.sources] == [1, 2, 3, 4]
    scores = [s.score for s in result.sources]
    assert scores == sorted(scores, reverse=True)
    assert Path(result.sources[0].path).name == "library-cards.md"  # the document that holds the answer
    for source in result.sources:
        assert source.text and source.score == source.scores[STAGE[indexed.rag.retriever]]
        assert "dense" in source.scores  # what rag.min_score is compared with
    assert set(result.timings) >= {"search_s"} and all(t >= 0 for t in result.timings.values())


def test_min_score_drops_what_scores_below_it(indexed, embedder) -> None:
    everything = build_retriever(index_dir(indexed), indexed, embedder).retrieve(QUESTION).sources
    similar = [s.scores["dense"] for s in everything]
    cut = (max(similar) + min(similar)) / 2  # between the most and the least similar
    strict = load_config(None, [f"rag.retriever={indexed.rag.retriever}", "rag.top_k=4", f"rag.min_score={cut}"])
    kept = build_retriever(index_dir(strict), strict, embedder).retrieve(QUESTION).sources
    assert kept and all(s.scores["dense"] >= cut for s in kept)
    assert [(s.path, s.chunk) for s in kept] == [(s.path, s.chunk) for s in everything if s.scores["dense"] >= cut]
    assert [s.number for s in kept] == list(range(1, len(kept) + 1))


def test_a_new_generation_is_picked_up_without_reopening(indexed, embedder, docs: Path) -> None:
    retriever = build_retriever(index_dir(indexed), indexed, embedder)
    before = retriever.retrieve(QUESTION).generation
    (docs / "extra.txt").write_text("Lost cards are replaced for five dollars at any desk.\n")
    ingest([docs], indexed, embedder, progress=False)
    after = retriever.retrieve("How much is a replacement card?")
    assert after.generation != before and "extra.txt" in {Path(s.path).name for s in after.sources}


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_missing_index_fails_at_check(kind: str, embedder) -> None:
    config = load_config(None, [f"rag.retriever={kind}"])
    with pytest.raises(IndexMissingError, match="ragtune ingest"):
        build_retriever(index_dir(config), config, embedder).check()
