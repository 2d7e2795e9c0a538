"""Answer, decision and retrieval metrics plus bootstrap intervals: pure functions over plain data."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)
_PUNCTUATION_RUN = re.compile("[" + re.escape(string.punctuation) + "]+")
# Bootstrap resamples are drawn in blocks of at most this many indices, so memory stays flat for large n.
_BLOCK = 1 << 22


def normalize_answer(s: str) -> str:
    """SQuAD's normalisation: lowercase, drop punctuation, drop a/an/the, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _check_golds(golds: Sequence[str]) -> None:
    # A question without an accepted answer cannot be scored; read_questions never produces one.
    if isinstance(golds, str) or not golds:
        raise ValueError(f"golds should be a non-empty list of answers, got {golds!r}")


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer (SQuAD EM)."""
    _check_golds(golds)
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(gold) for gold in golds))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    # SQuAD v2: when either side is empty, F1 is 1 if both are empty, else 0.
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """Bag-of-tokens F1 between the normalised prediction and the best gold answer (SQuAD F1)."""
    _check_golds(golds)
    pred = normalize_answer(prediction).split()
    return max(_f1(pred, normalize_answer(gold).split()) for gold in golds)


def contains(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when a normalised gold answer appears in the normalised prediction as whole words.

    Whole words, not raw substrings: gold "no" must not match a prediction saying "not". A gold answer
    that normalises to nothing (only punctuation or articles) never matches.
    """
    _check_golds(golds)
    pred = f" {normalize_answer(prediction)} "
    return float(any((gold := normalize_answer(g)) and f" {gold} " in pred for g in golds))


def _choice_tokens(text: str) -> list[str]:
    # Punctuation becomes a space here (not deleted as in SQuAD) so "yes/no" stays two words.
    return _ARTICLES.sub(" ", _PUNCTUATION_RUN.sub(" ", text.lower())).split()


def parse_choice(prediction: str, choices: Sequence[str]) -> str | None:
    """The decision a free-text answer gives for a closed set of choices such as yes/no/maybe.

    Words are compared after lowercasing, with punctuation as spaces and articles dropped:
    - an answer that opens with a choice gives that choice ("Yes, because ..." -> "yes"), even when it
      goes on to mention others; of several choices that open it, the longest wins;
    - otherwise, when exactly one distinct choice appears anywhere as whole words, that choice;
    - otherwise None: no choice appears, or several different ones do and none opens the answer
      ("it could be yes or no") - that is ambiguous, and callers score it as wrong.
    Prompts should therefore ask the model to begin its answer with the decision.
    """
    words = _choice_tokens(prediction)
    options = [(choice, _choice_tokens(choice)) for choice in choices]
    options = [(choice, toks) for choice, toks in options if toks]
    opening = [(len(toks), choice) for choice, toks in options if words[: len(toks)] == toks]
    if opening:
        return max(opening, key=lambda item: item[0])[1]
    found = {
        choice
        for choice, toks in options
        if any(words[i : i + len(toks)] == toks for i in range(len(words) - len(toks) + 1))
    }
    return found.pop() if len(found) == 1 else None


def _check_pairs(preds: Sequence[str | None], golds: Sequence[str]) -> None:
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions for {len(golds)} gold labels; pass one prediction per question")
    if not golds:
        raise ValueError("no predictions to score; pass at least one question")


def choice_accuracy(preds: Sequence[str | None], golds: Sequence[str]) -> float:
    """Share of parsed decisions equal to the gold label; an unparseable (None) prediction is wrong."""
    _check_pairs(preds, golds)
    return sum(p is not None and p == g for p, g in zip(preds, golds)) / len(golds)


def macro_f1(preds: Sequence[str | None], golds: Sequence[str], labels: Sequence[str]) -> float:
    """Per-label F1 averaged over `labels` (sklearn's macro average, as PubMedQA's evaluation uses).

    An unparseable (None) prediction counts as a miss for its gold label and a false positive for no
    label. A label with no gold and no prediction scores 0, as sklearn's zero_division default does.
    """
    _check_pairs(preds, golds)
    unknown = sorted(set(golds) - set(labels))
    if unknown:
        raise ValueError(f"gold labels {unknown} are not in labels {list(labels)}; add them to labels")
    scores = []
    for label in labels:
        tp = sum(p == label and g == label for p, g in zip(preds, golds))
        fp = sum(p == label and g != label for p, g in zip(preds, golds))
        fn = sum(p != label and g == label for p, g in zip(preds, golds))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return sum(scores) / len(scores)


def retrieval_hits(ranked_paths: Sequence[str], gold_path: str, k: int) -> float:
    """hit@k: 1.0 when `gold_path` is among the first k entries of `ranked_paths`.

    Ranks are positions in the list as given: pass one entry per retrieved chunk for chunk-level
    ranks, or `list(dict.fromkeys(paths))` for document-level ones. Paths compare as exact strings.
    """
    if k < 1:
        raise ValueError(f"k should be at least 1, got {k}")
    return float(gold_path in ranked_paths[:k])


def reciprocal_rank(ranked_paths: Sequence[str], gold_path: str) -> float:
    """1 / (1-based rank of the first `gold_path` in `ranked_paths`); 0.0 when it was not retrieved."""
    for rank, path in enumerate(ranked_paths, 1):
        if path == gold_path:
            return 1.0 / rank
    return 0.0


def _floats(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"values should be a flat list of numbers, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("values hold NaN or infinity; score every question with a finite number")
    return array


def bootstrap_ci(
    values: Sequence[float], *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; the same seed always gives the same interval."""
    array = _floats(values)
    if array.size == 0:
        raise ValueError("no values to bootstrap; score at least one question")
    if resamples < 1:
        raise ValueError(f"resamples should be at least 1, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level should be between 0 and 1 (0.95 for a 95% interval), got {level}")
    rng = np.random.default_rng(seed)
    rows = max(1, _BLOCK // array.size)
    means = np.concatenate(
        [
            array[rng.integers(0, array.size, size=(min(rows, resamples - start), array.size))].mean(axis=1)
            for start in range(0, resamples, rows)
        ]
    )
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def summary(values: Sequence[float]) -> dict[str, float | list[float] | int | None]:
    """Mean, 95% bootstrap interval and count; mean and ci95 are None when there are no values."""
    array = _floats(values)
    if array.size == 0:
        return {"mean": None, "ci95": None, "n": 0}
    low, high = bootstrap_ci(array)
    return {"mean": float(array.mean()), "ci95": [low, high], "n": int(array.size)}


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float | list[float] | int | None]:
    """Mean of a - b per question, with its 95% bootstrap interval: two paths scored on the same questions.

    Resampling the per-question differences keeps the pairing, so the interval is narrower (and fairer)
    than comparing two separately bootstrapped intervals; an interval that excludes 0 is a real difference.
    """
    left, right = _floats(a), _floats(b)
    if left.shape != right.shape:
        raise ValueError(f"paired scores need the same questions: {left.size} values against {right.size}")
    return summary(left - right)


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """Median and 95th percentile (linear interpolation), e.g. of latencies; None when empty."""
    array = _floats(values)
    if array.size == 0:
        return {"p50": None, "p95": None}
    p50, p95 = np.percentile(array, [50, 95])
    return {"p50": float(p50), "p95": float(p95)}


def cohen_kappa(a: Sequence[bool], b: Sequence[bool]) -> float | None:
    """Cohen's kappa of two yes/no raters on the same items: (observed - chance agreement) / (1 - chance).

    Chance agreement is what two raters with these yes-rates would reach by luck; 1 is full agreement,
    0 no better than chance. None when chance agreement is 1 (both raters always gave the one same verdict):
    kappa is then undefined, whatever the observed agreement.
    """
    if len(a) != len(b):
        raise ValueError(f"paired verdicts need the same items: {len(a)} against {len(b)}")
    if len(a) == 0:
        return None
    # In counts over n items (times n * n), so equal rates give exactly 0 and full agreement exactly 1.
    n = len(a)
    agree = sum(bool(x) == bool(y) for x, y in zip(a, b))
    yes_a, yes_b = sum(map(bool, a)), sum(map(bool, b))
    chance = yes_a * yes_b + (n - yes_a) * (n - yes_b)
    return None if chance == n * n else (agree * n - chance) / (n * n - chance)


def ranking_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """How often an item labelled True scores above one labelled False (ties count half): 1 ranks every True
    item first, 0.5 is chance. It needs no threshold. None unless both labels occur."""
    if len(scores) != len(labels):
        raise ValueError(f"scores and labels need the same items: {len(scores)} against {len(labels)}")
    values, truth = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    high, low = values[truth][:, None], values[~truth][None, :]
    if high.size == 0 or low.size == 0:
        return None
    return float((high > low).mean() + 0.5 * (high == low).mean())


def bootstrap_statistic(
    statistic: Callable[..., float | None],
    *columns: Sequence[Any],
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> list[float] | None:
    """Percentile bootstrap interval of `statistic(*columns)`, resampling items (the same picks in every
    column); resamples where the statistic is undefined (None) are left out. None when it always is."""
    sizes = {len(c) for c in columns}
    if len(sizes) != 1:
        raise ValueError(f"paired columns need the same items, got sizes {sorted(sizes)}")
    n = sizes.pop()
    if n == 0:
        return None
    arrays, rng = [np.asarray(c) for c in columns], np.random.default_rng(seed)
    values = []
    for _ in range(resamples):  # one resample's picks at a time: memory stays flat for large n
        picks = rng.integers(0, n, size=n)
        value = statistic(*(a[picks] for a in arrays))
        if value is not None:
            values.append(value)
    if not values:
        return None
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return [float(low), float(high)]
