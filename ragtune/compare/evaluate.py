"""Run one answering path over a question set and score it: per-question records, then aggregate metrics.

`ragtune eval` is this for the configured mode; `ragtune compare` runs it for every path. Retrieval is
scored on a second retrieval of DEPTH (10) chunks per question (`scoring_retriever`) while the answer
reads its own rag.top_k, so evidence hit@1/5/10 are measured whatever top_k the answer uses.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ragtune.compare.citations import citation_metrics, judge_metrics, refusal_metrics
from ragtune.compare.evidence import DEPTH, ks_within, score_ranking, summarise
from ragtune.compare.metrics import (
    contains,
    exact_match,
    macro_f1,
    parse_choice,
    percentiles,
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
    choice: str | None = None  # the decision, for closed-set questions: parsed, or the likeliest choice
    # How the closed-set decision was made: "loglik" (likeliest choice) or "generate" (parsed); None otherwise.
    scoring: str | None = None
    # loglik: each choice's total log-probability, and the choice with the highest per-byte one (acc_norm).
    choice_logprobs: dict[str, float] | None = None
    choice_norm: str | None = None
    # Retrieving paths' written answers: sources cited as [n], those supporting the answer, and whether the
    # retrieved text supports every sentence (rag.attribution); None without retrieval.
    cited: list[int] = field(default_factory=list)
    supports: list[int] = field(default_factory=list)
    grounded: bool | None = None
    citation: str | None = None  # "written" by the model, "chosen" (appended: rag.citation) or None
    draft: str | None = None  # the model's answer when the support check replaced it by the refusal
    # The answer's support verdict (supported, partly, unsupported; None for a refusal or without retrieval)
    # and each sentence's: its span in the prediction, its supporting source and the span in that source.
    support: str | None = None
    sentences: list[dict[str, Any]] = field(default_factory=list)
    # Shown with the verdict "unsupported" (rag.refuse_unsupported off): the check found it unsupported, as it
    # would have refused it with the setting on. Refusal figures count it with the refusals.
    flagged: bool = False
    # eval.judge.model's verdict on the written text the lexical check ruled on (the answer, or the held-back
    # draft: ragtune.compare.judge), and log P of "yes" and "no"; None where nothing was judged.
    judge_supported: bool | None = None
    judge_logprobs: dict[str, float] | None = None
    em: float = 0.0
    f1: float = 0.0
    contains: float = 0.0
    hit: float | None = None  # a gold document among the sources the answer read (None: no gold or no retrieval)
    rr: float | None = None  # 1 / chunk rank of the first gold-document chunk in the scored ranking
    # Per-chunk scores of the scored ranking (doc@k, evidence@k for k in 1, 5, 10), and that ranking as
    # "path#chunk", best first; None and empty without gold documents or retrieval.
    retrieval: dict[str, float] | None = None
    ranked_chunks: list[str] = field(default_factory=list)
    first_token_s: float = 0.0
    total_s: float = 0.0
    completion_tokens: int = 0
    tokens_per_s: float = 0.0


def scoring_retriever(config: Any, embedder: Any) -> Any:
    """`config`'s retriever asked for max(rag.top_k, DEPTH) chunks: the ranking retrieval is scored on.

    It runs beside the answering pipeline, not inside it, so the answer reads exactly what a top_k
    retrieval returns (fusion and min_score cuts included) and its latency holds no scoring work.
    """
    from models.paths import index_dir
    from rag.retrieve import build_retriever

    deep = replace(config, rag=replace(config.rag, top_k=max(config.rag.top_k, DEPTH)))
    retriever = build_retriever(index_dir(config), deep, embedder)
    retriever.check()
    return retriever


def prompt_for(question: Question) -> str:
    """The question as asked; closed-set questions end with the instruction the importers train with."""
    if not question.choices:
        return question.question
    *rest, last = question.choices
    options = f"{', '.join(rest)} or {last}" if rest else last
    return f"{question.question}\nAnswer with one word: {options}."


def score(
    question: Question, answer: Any, gold: list[str], retrieves: bool, ranking: list[Any] | None = None
) -> Scored:
    """Score one `models.answer.Answer` against its question; `ranking` is the deeper retrieval, if kept.

    A question the documents do not answer (no accepted answers) scores 1 on em, f1 and contains when the
    answer is a refusal, or is shown flagged unsupported by the passages, else 0.
    """
    prediction = answer.text
    ranked = list(dict.fromkeys(s.path for s in answer.sources))  # per document, best rank first
    logprobs = getattr(answer, "choice_logprobs", None)
    scoring = None if not question.choices else "loglik" if logprobs is not None else "generate"
    choice = prediction if scoring == "loglik" else parse_choice(prediction, question.choices or ())
    usage = answer.usage
    chunks = answer.sources if ranking is None else ranking
    scores = None
    if retrieves and gold:
        scores = score_ranking([(s.path, s.text) for s in chunks], gold, question.answers, ks_within(DEPTH))
    flagged = retrieves and not answer.refused and answer.support == "unsupported"
    answered = _answer_scores(question, prediction, answer.refused or flagged)
    return Scored(
        id=question.id,
        question=question.question,
        answers=list(question.answers),
        prediction=prediction,
        sources=ranked,
        refused=answer.refused,
        choice=choice if question.choices else None,
        scoring=scoring,
        choice_logprobs=logprobs,
        choice_norm=_norm_choice(logprobs) if logprobs else None,
        cited=list(answer.cited) if retrieves else [],
        supports=list(answer.supports) if retrieves else [],
        grounded=answer.grounded if retrieves and scoring != "loglik" else None,
        citation=answer.citation if retrieves else None,
        draft=getattr(answer, "draft", None),
        support=answer.support if retrieves else None,
        flagged=flagged,
        sentences=answer.sentences_json() if retrieves else [],
        **answered,
        hit=max(retrieval_hits(ranked, g, len(ranked) or 1) for g in gold) if scores else None,
        rr=scores["rr"] if scores else None,
        retrieval=scores,
        ranked_chunks=[f"{s.path}#{s.chunk}" for s in chunks] if scores else [],
        first_token_s=answer.timings.get("first_token_s", 0.0),
        total_s=answer.timings.get("total_s", 0.0),
        completion_tokens=usage.completion_tokens if usage else 0,
        tokens_per_s=usage.tokens_per_s if usage else 0.0,
    )


def _answer_scores(question: Question, prediction: str, refused: bool) -> dict[str, float]:
    if not question.answers:  # unanswerable: the right answer is the refusal
        return {"em": float(refused), "f1": float(refused), "contains": float(refused)}
    return {
        "em": exact_match(prediction, question.answers),
        "f1": token_f1(prediction, question.answers),
        "contains": contains(prediction, question.answers),
    }


def _norm_choice(logprobs: dict[str, float]) -> str:
    """acc_norm's pick: the highest log-probability per UTF-8 byte of the choice."""
    return max(logprobs, key=lambda c: logprobs[c] / len(c.encode("utf-8")))


def evaluate(
    questions: list[Question],
    answer: Callable[[str], Any],
    *,
    docs_root: Path | None,
    retrieves: bool,
    progress: bool | None = None,
    rank: Callable[[str], Any] | None = None,
    choose: Callable[[str, tuple[str, ...]], Any] | None = None,
    judge: Callable[[Scored, list[Any]], None] | None = None,
) -> list[Scored]:
    """Answer every question with `answer(text) -> Answer` and score it; gold docs resolve under docs_root.

    With `rank(text) -> Retrieval` (a `scoring_retriever`'s retrieve), retrieval is scored on its ranking,
    else on the sources the answer read. With `choose(text, choices) -> Answer` (a pipeline's `choose`),
    closed-set questions are answered by the likeliest choice instead of free text (eval.closed_set=loglik).
    With `judge(scored, sources)` (a `ragtune.compare.judge.Judge`'s rate), each written answer is judged
    against the sources it read.
    """
    scored = []
    for question in tqdm(
        questions, desc="answering", unit="question", disable=None if progress is None else not progress
    ):
        prompt = prompt_for(question)
        if choose is not None and question.choices:
            result = choose(prompt, question.choices)
        else:
            result = answer(prompt)
        gold = gold_paths(question, docs_root)
        ranking = rank(prompt).sources if rank is not None and retrieves and gold else None
        item = score(question, result, gold, retrieves, ranking)
        if judge is not None and retrieves:
            judge(item, result.sources)
        scored.append(item)
    return scored


def gold_paths(question: Question, docs_root: Path | None) -> list[str]:
    """The question's gold documents as the index stores paths (resolved); empty without docs_root or docs."""
    return [str((docs_root / doc).resolve()) for doc in question.docs] if docs_root else []


def aggregate(
    questions: list[Question], scored: list[Scored], top_k: int | None = None, judge: str | None = None
) -> dict[str, Any]:
    """Metrics with bootstrap 95% intervals, latency percentiles and what could not be parsed.

    `judge` names the judge model that rated the answers (its figures are reported only then).

    hit@TOP_K: a gold document among the chunks the answer read. doc_hit@k, evidence_hit@k and mrr score
    the deeper ranking per chunk (ragtune.compare.evidence), over the questions that name gold documents.
    """
    metrics: dict[str, Any] = {
        "em": summary([s.em for s in scored]),
        "f1": summary([s.f1 for s in scored]),
        "contains": summary([s.contains for s in scored]),
        "refusals": sum(s.refused for s in scored),
        "flagged": sum(s.flagged for s in scored),
    }
    closed = [(q, s) for q, s in zip(questions, scored) if q.choices]
    if closed:
        labels = list(dict.fromkeys(c for q, _ in closed for c in q.choices))
        metrics["closed_set_scoring"] = ", ".join(sorted({s.scoring for _, s in closed if s.scoring}))
        metrics["choice_accuracy"] = summary([float(s.choice in q.answers) for q, s in closed])
        if any(s.choice_norm is not None for _, s in closed):  # acc_norm, beside acc, as reference harnesses do
            metrics["choice_accuracy_norm"] = summary([float(s.choice_norm in q.answers) for q, s in closed])
        metrics["macro_f1"] = macro_f1([s.choice for _, s in closed], [q.answers[0] for q, _ in closed], labels)
        metrics["unparseable"] = [s.id for _, s in closed if s.choice is None]
        # What always answering the most common gold label would score on this same sample.
        label, count = Counter(q.answers[0] for q, _ in closed).most_common(1)[0]
        metrics["majority_baseline"] = {"label": label, "accuracy": count / len(closed)}
    metrics.update(citation_metrics(scored))
    if judge is not None:
        metrics.update({"judge_model": judge, **judge_metrics(scored)})
    metrics.update(refusal_metrics(scored))
    hits = [s.hit for s in scored if s.hit is not None]
    if hits:
        metrics[f"hit@{top_k or 'k'}"] = summary(hits)
        metrics.update(summarise([s.retrieval for s in scored if s.retrieval is not None], ks_within(DEPTH)))
    latency = {
        "first_token_s": percentiles([s.first_token_s for s in scored]),
        "total_s": percentiles([s.total_s for s in scored]),
        "tokens_per_s": percentiles([s.tokens_per_s for s in scored if s.tokens_per_s]),
    }
    return {"metrics": metrics, "latency": latency, "questions": len(scored)}


def answers_jsonl(scored: list[Scored]) -> str:
    return "".join(json.dumps(asdict(s), ensure_ascii=False) + "\n" for s in scored)
