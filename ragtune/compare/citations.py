"""Can the answers be checked? Citation rate and precision, groundedness, and refusal precision / recall.

Pure functions over answers.jsonl rows (`Scored` as dicts or objects with the same fields); each figure
is a `summary` (mean, bootstrap 95% interval, n), n = 0 where it does not apply (no retrieval, no
unanswerable question, no refusal). Definitions, over the answers a retrieving path wrote (not those
chosen by likelihood, which write no text):
- citation rate: answers (not refusals) that cite at least one retrieved source as [n]; written
  citation rate: those whose [n] the model wrote itself (not appended by the rag Answerer's format check);
- citation precision: per citing answer, the share of its cited sources that support a sentence of it (rag.attribution);
- supported citation on correct answers: right answers that cite at least one source supporting them;
- groundedness: answers (not refusals) whose content is found in the retrieved text taken together;
- refusal precision: refusals made on questions the documents do not answer (`answers: []`);
- refusal recall: unanswerable questions that were refused.
With a judge model (ragtune.compare.judge), over the texts it ruled on (`judge_supported` not None):
- judged faithfulness: answers (not refusals) the judge finds supported by the passages they read;
- judge agreement: texts (answers, and drafts the lexical check replaced by the refusal) where the judge's
  verdict equals the lexical one (`grounded`), with Cohen's kappa (agreement beyond chance; None: undefined);
- judge AUC: how often a text the lexical check finds supported gets a larger yes-over-no margin from the
  judge than one it does not (0.5: chance; None unless the check gave both verdicts).
Kappa and AUC carry bootstrap intervals over the judged texts.
"""

from __future__ import annotations

from typing import Any

from ragtune.compare.metrics import bootstrap_statistic, cohen_kappa, contains, ranking_auc, summary


def _get(row: Any, key: str) -> Any:
    return row[key] if isinstance(row, dict) else getattr(row, key)


def citation_metrics(rows: list[Any]) -> dict[str, Any]:
    """Citation rate, citation precision, supported citation on correct answers and groundedness."""
    written = [r for r in rows if _get(r, "grounded") is not None and _get(r, "scoring") != "loglik"]
    answered = [r for r in written if not _get(r, "refused")]
    citing = [r for r in answered if _get(r, "cited")]
    right = [r for r in answered if _get(r, "answers") and _get(r, "contains")]
    return {
        "citation_rate": summary([float(bool(_get(r, "cited"))) for r in answered]),
        "written_citation_rate": summary([float(_get(r, "citation") == "written") for r in answered]),
        "citation_precision": summary(
            [len(set(_get(r, "cited")) & set(_get(r, "supports"))) / len(_get(r, "cited")) for r in citing]
        ),
        "supported_citation_on_correct": summary(
            [float(bool(set(_get(r, "cited")) & set(_get(r, "supports")))) for r in right]
        ),
        "groundedness": summary([float(bool(_get(r, "grounded"))) for r in answered]),
    }


def _declined(row: Any) -> bool:
    """Refused, or shown flagged unsupported (what rag.refuse_unsupported would have refused)."""
    flagged = row.get("flagged", False) if isinstance(row, dict) else getattr(row, "flagged", False)
    return bool(_get(row, "refused") or flagged)


def refusal_metrics(rows: list[Any]) -> dict[str, Any]:
    """Refusal precision (refusals that were right to refuse), recall (unanswerable questions refused) and the
    false-refusal rate (answerable questions refused), a flagged answer counting as refused, with what the
    support check cost: the share of
    answerable questions whose answer holds an accepted answer as shown, and as the model wrote it (its
    draft, where the check replaced it by the refusal)."""
    refused = [r for r in rows if _declined(r)]
    unanswerable = [r for r in rows if not _get(r, "answers")]
    answerable = [r for r in rows if _get(r, "answers")]
    return {
        "refusal_precision": summary([float(not _get(r, "answers")) for r in refused]),
        "refusal_recall": summary([float(_declined(r)) for r in unanswerable]),
        "false_refusal_rate": summary([float(_declined(r)) for r in answerable]),
        "contains_unchecked": summary(
            [contains(_get(r, "draft") or _get(r, "prediction"), _get(r, "answers")) for r in answerable]
        ),
    }


def judge_metrics(rows: list[Any]) -> dict[str, Any]:
    """Judged faithfulness, and the judge's agreement with the lexical check: the share of equal verdicts,
    Cohen's kappa, and the AUC of the judge's yes-over-no margin against the check's verdicts (threshold-free:
    a judge leaning to one word can still rank the texts well)."""
    judged = [r for r in rows if _get(r, "judge_supported") is not None]
    shown = [r for r in judged if not _get(r, "refused")]
    judge = [bool(_get(r, "judge_supported")) for r in judged]
    lexical = [bool(_get(r, "grounded")) for r in judged]
    margins = [_get(r, "judge_logprobs")["yes"] - _get(r, "judge_logprobs")["no"] for r in judged]
    return {
        "judged_faithfulness": summary([float(bool(_get(r, "judge_supported"))) for r in shown]),
        "judge_agreement": summary([float(j == x) for j, x in zip(judge, lexical)]),
        "judge_kappa": cohen_kappa(judge, lexical),
        "judge_kappa_ci95": bootstrap_statistic(cohen_kappa, judge, lexical),
        "judge_auc": ranking_auc(margins, lexical),
        "judge_auc_ci95": bootstrap_statistic(ranking_auc, margins, lexical),
    }
