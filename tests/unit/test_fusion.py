"""Fusion formulas with exact numbers."""

import pytest

from rag.fusion import normalised, rrf, weighted

DENSE = [(1, 0.9), (2, 0.5), (3, 0.1)]
LEXICAL = [(3, 12.0), (4, 6.0)]


def test_rrf_sums_weighted_reciprocal_ranks() -> None:
    fused = dict(rrf(DENSE, LEXICAL, k=60, dense_weight=0.5))
    assert fused[1] == pytest.approx(0.5 / 61)
    assert fused[3] == pytest.approx(0.5 / 63 + 0.5 / 61)
    assert fused[4] == pytest.approx(0.5 / 62)
    assert [chunk for chunk, _ in rrf(DENSE, LEXICAL, 60, 0.5)] == [3, 1, 2, 4]  # 2 and 4 tie: lower id first


def test_rrf_weight_one_is_the_dense_ranking() -> None:
    assert [chunk for chunk, _ in rrf(DENSE, LEXICAL, 60, 1.0)][:3] == [1, 2, 3]


def test_weighted_sums_min_max_normalised_scores() -> None:
    fused = dict(weighted(DENSE, LEXICAL, dense_weight=0.25))
    assert fused[1] == pytest.approx(0.25 * 1.0)
    assert fused[2] == pytest.approx(0.25 * 0.5)
    assert fused[3] == pytest.approx(0.25 * 0.0 + 0.75 * 1.0)
    assert fused[4] == pytest.approx(0.75 * 0.0)


def test_normalisation_of_equal_scores_and_of_nothing() -> None:
    assert normalised([2.0, 2.0]) == [1.0, 1.0] and normalised([]) == []


def test_ties_go_to_the_better_original_rank_then_the_lower_id() -> None:
    assert rrf([(7, 1.0)], [(5, 1.0)], 60, 0.5) == [(5, 0.5 / 61), (7, 0.5 / 61)]
    assert [c for c, _ in rrf([(7, 1.0), (9, 0.5)], [(5, 1.0)], 60, 0.5)] == [5, 7, 9]
