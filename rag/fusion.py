"""Fusion of two rankings into one: pure functions over (id, score) lists, best first.

rrf:      fused(d) = w * 1 / (k + rank_dense(d)) + (1 - w) * 1 / (k + rank_lexical(d))
weighted: fused(d) = w * norm_dense(d) + (1 - w) * norm_lexical(d),  norm(s) = (s - min) / (max - min)

Ranks start at 1 and scores are min-max normalised over each side's own candidates; a chunk one side
did not return adds nothing from that side. RRF needs no common scale (BM25 is unbounded, cosine is
not); the weighted sum keeps how far apart the scores are, which ranks throw away.
"""

from __future__ import annotations

Ranking = list[tuple[int, float]]  # (chunk id, score), best first


def rrf(dense: Ranking, lexical: Ranking, k: int, dense_weight: float) -> Ranking:
    fused: dict[int, float] = {}
    for ranking, weight in ((dense, dense_weight), (lexical, 1.0 - dense_weight)):
        for rank, (chunk, _) in enumerate(ranking, 1):
            fused[chunk] = fused.get(chunk, 0.0) + weight / (k + rank)
    return _ordered(fused, dense, lexical)


def weighted(dense: Ranking, lexical: Ranking, dense_weight: float) -> Ranking:
    fused: dict[int, float] = {}
    for ranking, weight in ((dense, dense_weight), (lexical, 1.0 - dense_weight)):
        for chunk, score in zip((c for c, _ in ranking), normalised([s for _, s in ranking])):
            fused[chunk] = fused.get(chunk, 0.0) + weight * score
    return _ordered(fused, dense, lexical)


def normalised(scores: list[float]) -> list[float]:
    """Min-max to 0..1; equal scores (one candidate, or a tie throughout) all become 1."""
    if not scores:
        return []
    low, high = min(scores), max(scores)
    if high == low:
        return [1.0] * len(scores)
    return [(s - low) / (high - low) for s in scores]


def _ordered(fused: dict[int, float], dense: Ranking, lexical: Ranking) -> Ranking:
    # Ties go to the better of the two original ranks, then to the lower id: the order is deterministic.
    best = {}
    for ranking in (dense, lexical):
        for rank, (chunk, _) in enumerate(ranking):
            best[chunk] = min(best.get(chunk, rank), rank)
    return sorted(fused.items(), key=lambda item: (-item[1], best[item[0]], item[0]))
