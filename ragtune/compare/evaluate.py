"""Run one answering path over a question set and score it: per-question records, then aggregate metrics.

`ragtune eval` is this for the configured mode; `ragtune compare` runs it for every path.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ragtune.compare.metrics import (
    contains,
    exact_match,
    macro_f1,
    parse_choice,
    percentiles,
    reciprocal_rank,
    retrieval_hits,
    summary,
    token_f1,
)
from ragtune.compare.questions import Question


@dataclass
class Scored:
    """One question's answer, as written to answers.jsonl."""

    id: str
    question: str
    answers: list[str]
    prediction: str
    sources: list[str] = field(default_factory=list)
    refused: bool = False
    choice: str | None = None  # the decision parsed from the answer, for closed-set questions
    em: float = 0.0
    f1: float = 0.0
    contains: float = 0.0
    hit: float | None = None  # gold document among the sources (None: no gold document or no retrieval)
    rr: float | None = None
    first_token_s: float = 0.0
    total_s: float = 0.0
    completion_tokens: int = 0
    tokens_per_s: float = 0.0


def prompt_for(question: Question) -> str:
    """The question as asked; closed-set questions end with the instruction the importers train with."""
    if not question.choices:
        return question.question
    *rest, last = question.choices
    options = f"{', '.join(rest)} or {last}" if rest else last
    return f"{question.question}\nAnswer with one word: {options}."


def score(question: Question, answer: Any, gold_path: str | None, retrieves: bool) -> Scored:
    """Score one `rag.pipeline.Answer` against its question."""
    prediction = answer.text
    ranked = list(dict.fromkeys(s.path for s in answer.sources))  # per document, best rank first
    choice = parse_choice(prediction, question.choices) if question.choices else None
    usage = answer.usage
    return Scored(
        id=question.id,
        question=question.question,
        answers=list(question.answers),
        prediction=prediction,
        sources=ranked,
        refused=answer.refused,
        choice=choice,
        em=exact_match(prediction, question.answers),
        f1=token_f1(prediction, question.answers),
        contains=contains(prediction, question.answers),
        hit=retrieval_hits(ranked, gold_path, len(ranked) or 1) if retrieves and gold_path else None,
        rr=reciprocal_rank(ranked, gold_path) if retrieves and gold_path else None,
        first_token_s=answer.timings.get("first_token_s", 0.0),
        total_s=answer.timings.get("total_s", 0.0),
        completion_tokens=usage.completion_tokens if usage else 0,
        tokens_per_s=usage.tokens_per_s if usage else 0.0,
    )


def evaluate(
    questions: list[Question],
    answer: Callable[[str], Any],
    *,
    docs_root: Path | None,
    retrieves: bool,
    progress: bool | None = None,
) -> list[Scored]:
    """Answer every question with `answer(text) -> Answer` and score it; gold docs resolve under docs_root."""
    scored = []
    for question in tqdm(
        questions, desc="answering", unit="question", disable=None if progress is None else not progress
    ):
        gold = str((docs_root / question.doc).resolve()) if docs_root and question.doc else None
        scored.append(score(question, answer(prompt_for(question)), gold, retrieves))
    return scored


def aggregate(questions: list[Question], scored: list[Scored], top_k: int | None = None) -> dict[str, Any]:
    """Metrics with bootstrap 95% intervals, latency percentiles and what could not be parsed.

    Retrieval hits are named hit@TOP_K: the gold document among the chunks retrieved for the question.
    """
    metrics: dict[str, Any] = {
        "em": summary([s.em for s in scored]),
        "f1": summary([s.f1 for s in scored]),
        "contains": summary([s.contains for s in scored]),
        "refusals": sum(s.refused for s in scored),
    }
    closed = [(q, s) for q, s in zip(questions, scored) if q.choices]
    if closed:
        labels = list(dict.fromkeys(c for q, _ in closed for c in q.choices))
        metrics["choice_accuracy"] = summary([float(s.choice in q.answers) for q, s in closed])
        metrics["macro_f1"] = macro_f1([s.choice for _, s in closed], [q.answers[0] for q, _ in closed], labels)
        metrics["unparseable"] = [s.id for _, s in closed if s.choice is None]
        # What always answering the most common gold label would score on this same sample.
        label, count = Counter(q.answers[0] for q, _ in closed).most_common(1)[0]
        metrics["majority_baseline"] = {"label": label, "accuracy": count / len(closed)}
    hits = [s.hit for s in scored if s.hit is not None]
    if hits:
        metrics[f"hit@{top_k or 'k'}"] = summary(hits)
        metrics["mrr"] = summary([s.rr for s in scored if s.rr is not None])
    latency = {
        "first_token_s": percentiles([s.first_token_s for s in scored]),
        "total_s": percentiles([s.total_s for s in scored]),
        "tokens_per_s": percentiles([s.tokens_per_s for s in scored if s.tokens_per_s]),
    }
    return {"metrics": metrics, "latency": latency, "questions": len(scored)}


def answers_jsonl(scored: list[Scored]) -> str:
    return "".join(json.dumps(asdict(s), ensure_ascii=False) + "\n" for s in scored)
