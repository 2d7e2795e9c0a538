"""Retrieval scored per chunk: document hit@k, evidence hit@k and reciprocal rank of one ranked chunk list.

A question's gold documents hold its answer, but short answers (years, numbers, names) often occur in
other documents too. So a retrieved chunk is *evidence* only when it comes from a gold document and
contains an accepted answer; finding the right document is not enough on long documents, where the
answer sits in one passage of many. All ranks are chunk ranks: hit@k looks at the first k chunks, which
is what an LM given `rag.top_k = k` would read.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from ragtune.compare.metrics import summary

# The k's reported for every retrieval; scoring retrieves DEPTH chunks so that all of them are measured.
KS = (1, 5, 10)
DEPTH = max(KS)


def normalize_text(text: str) -> str:
    """Case folded, every run of whitespace one space: how an answer is looked for in a chunk."""
    return " ".join(text.casefold().split())


def holds_answer(text: str, answers: Sequence[str]) -> bool:
    """Whether `text` contains an accepted answer (case-insensitive, whitespace-normalised containment).

    Plain containment, not SQuAD's word-level normalisation: the chunk is quoted evidence, and an answer
    such as "$45" or "U.S." must be found as written. An answer that is only whitespace never matches.
    """
    haystack = normalize_text(text)
    return any((needle := normalize_text(answer)) and needle in haystack for answer in answers)


def ks_within(depth: int) -> tuple[int, ...]:
    """The reported k's a ranking of `depth` chunks can measure (k above the depth would be a guess)."""
    return tuple(k for k in KS if k <= depth)


def score_ranking(
    chunks: Sequence[tuple[str, str]], gold: Collection[str], answers: Sequence[str], ks: Sequence[int] = KS
) -> dict[str, float]:
    """Per-question retrieval scores of `chunks`, (path, text) best first, against gold paths and answers.

    Returns {"doc@k": 1.0 when a gold document is among the first k chunks' documents,
             "evidence@k": 1.0 when one of the first k chunks is from a gold document and holds an answer,
             "rr": 1 / rank of the first chunk from a gold document (0.0 when none was retrieved)}.
    A ranking shorter than k (a min_score cut, a small index) is scored as it is: the missing ranks miss.
    """
    if not gold:
        raise ValueError("gold should name at least one document; questions without one are not scored")
    if any(k < 1 for k in ks):
        raise ValueError(f"every k should be at least 1, got {list(ks)}")
    from_gold = [path in gold for path, _ in chunks]
    evidence = [ok and holds_answer(text, answers) for ok, (_, text) in zip(from_gold, chunks)]
    scores: dict[str, float] = {}
    for k in ks:
        scores[f"doc@{k}"] = float(any(from_gold[:k]))
        scores[f"evidence@{k}"] = float(any(evidence[:k]))
    first = next((rank for rank, ok in enumerate(from_gold, 1) if ok), None)
    scores["rr"] = 0.0 if first is None else 1.0 / first
    return scores


def summarise(rows: Sequence[dict[str, float]], ks: Sequence[int] = KS) -> dict[str, Any]:
    """Mean and bootstrap 95% interval of each per-question score, named doc_hit@k, evidence_hit@k, mrr."""
    metrics: dict[str, Any] = {}
    for kind in ("doc", "evidence"):
        for k in ks:
            metrics[f"{kind}_hit@{k}"] = summary([row[f"{kind}@{k}"] for row in rows])
    metrics["mrr"] = summary([row["rr"] for row in rows])
    return metrics


def metric_label(name: str) -> str:
    """A metric's name as a report shows it: doc_hit@5 -> "doc hit@5"."""
    return {"mrr": "MRR"}.get(name, name.replace("_", " "))
