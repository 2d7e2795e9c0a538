import numpy as np
import pytest

from ragtune.compare.metrics import (
    bootstrap_ci,
    choice_accuracy,
    contains,
    exact_match,
    macro_f1,
    normalize_answer,
    parse_choice,
    percentiles,
    reciprocal_rank,
    retrieval_hits,
    summary,
    token_f1,
)

YNM = ("yes", "no", "maybe")


def test_normalize_answer_follows_squad():
    assert normalize_answer("  The  Eiffel-Tower, in PARIS! ") == "eiffeltower in paris"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theory") == "theory"  # articles only as whole words


def test_exact_match_takes_the_best_gold():
    assert exact_match("the Denver Broncos", ["Broncos", "Denver Broncos"]) == 1.0
    assert exact_match("Denver", ["Denver Broncos"]) == 0.0


def test_token_f1_matches_the_squad_definition():
    # pred {denver, broncos, won}, gold {denver, broncos}: precision 2/3, recall 1 -> F1 0.8.
    assert token_f1("Denver Broncos won", ["Denver Broncos"]) == pytest.approx(0.8)
    assert token_f1("Denver Broncos won", ["Carolina", "Denver Broncos"]) == pytest.approx(0.8)
    assert token_f1("nothing shared", ["Denver"]) == 0.0
    # Repeated tokens count only as often as they occur on both sides.
    assert token_f1("a b b", ["b c"]) == pytest.approx(0.5)
    assert token_f1("the", ["a"]) == 1.0  # both normalise to nothing


def test_contains_matches_whole_words_only():
    assert contains("It was the Denver Broncos, in 2016.", ["denver broncos"]) == 1.0
    assert contains("This is not the case", ["no"]) == 0.0
    assert contains("anything", ["the"]) == 0.0  # an empty normalised gold never matches


@pytest.mark.parametrize("metric", [exact_match, token_f1, contains])
def test_answer_metrics_reject_missing_golds(metric):
    with pytest.raises(ValueError, match="non-empty list"):
        metric("x", [])
    with pytest.raises(ValueError, match="non-empty list"):
        metric("x", "yes")  # a bare string is a bug, not a list of one-letter answers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes.", "yes"),
        ("no", "no"),
        ("MAYBE - the evidence is mixed", "maybe"),
        ("Yes, although some say no.", "yes"),  # the opening word wins
        ("Answer: no", "no"),
        ("Based on the context, the answer is maybe.", "maybe"),
        ("It could be yes or no.", None),  # two decisions, neither opening: ambiguous
        ("yes/no", "yes"),
        ("I cannot tell.", None),
        ("Not known", None),  # "not" is not "no"
        ("", None),
    ],
)
def test_parse_choice(text, expected):
    assert parse_choice(text, YNM) == expected


def test_parse_choice_prefers_the_longest_opening_and_returns_the_choice_as_given():
    assert parse_choice("not sure, really", ["Not sure", "not"]) == "Not sure"
    assert parse_choice("It is a Type-2 case", ["Type 1", "Type 2"]) == "Type 2"


def test_choice_accuracy_counts_unparseable_as_wrong():
    assert choice_accuracy(["yes", None, "no", "maybe"], ["yes", "yes", "no", "no"]) == 0.5
    with pytest.raises(ValueError, match="one prediction per question"):
        choice_accuracy(["yes"], ["yes", "no"])
    with pytest.raises(ValueError, match="at least one"):
        choice_accuracy([], [])


def test_macro_f1_averages_per_label_f1():
    preds = ["yes", "yes", "no", None, "maybe", "yes"]
    golds = ["yes", "no", "no", "yes", "maybe", "maybe"]
    # yes: tp1 fp2 fn1 -> 2/5; no: tp1 fp0 fn1 -> 2/3; maybe: tp1 fp0 fn1 -> 2/3.
    assert macro_f1(preds, golds, YNM) == pytest.approx((0.4 + 2 / 3 + 2 / 3) / 3)
    assert macro_f1(["yes", "yes"], ["yes", "yes"], YNM) == pytest.approx(1 / 3)  # absent labels score 0
    with pytest.raises(ValueError, match="not in labels"):
        macro_f1(["yes"], ["perhaps"], YNM)


def test_macro_f1_agrees_with_sklearn_when_available():
    sklearn = pytest.importorskip("sklearn.metrics", reason="scikit-learn is not installed")
    rng = np.random.default_rng(1)
    golds = list(rng.choice(YNM, 200))
    preds = list(rng.choice(YNM, 200))
    expected = sklearn.f1_score(golds, preds, labels=list(YNM), average="macro", zero_division=0)
    assert macro_f1(preds, golds, YNM) == pytest.approx(expected)


def test_retrieval_hits_and_reciprocal_rank():
    ranked = ["/d/a.txt", "/d/b.txt", "/d/a.txt", "/d/c.txt"]
    assert retrieval_hits(ranked, "/d/b.txt", 1) == 0.0
    assert retrieval_hits(ranked, "/d/b.txt", 2) == 1.0
    assert retrieval_hits(ranked, "/d/z.txt", 10) == 0.0
    assert reciprocal_rank(ranked, "/d/c.txt") == 0.25
    assert reciprocal_rank(list(dict.fromkeys(ranked)), "/d/c.txt") == pytest.approx(1 / 3)  # document level
    assert reciprocal_rank(ranked, "/d/z.txt") == 0.0
    with pytest.raises(ValueError, match="k should be at least 1"):
        retrieval_hits(ranked, "/d/a.txt", 0)


def test_bootstrap_ci_is_deterministic_and_brackets_the_mean():
    values = [1.0] * 55 + [0.0] * 45
    low, high = bootstrap_ci(values)
    assert (low, high) == bootstrap_ci(values)
    assert low < 0.55 < high
    # The normal approximation's half-width is about 1.96 * sqrt(.55 * .45 / 100) = 0.0975.
    assert high - low == pytest.approx(0.195, abs=0.03)
    assert bootstrap_ci(values, seed=1) != (low, high)
    assert bootstrap_ci([0.3]) == (0.3, 0.3)
    assert bootstrap_ci([1.0, 0.0], resamples=7) == bootstrap_ci([1.0, 0.0], resamples=7)


def test_bootstrap_ci_draws_in_blocks_without_changing_shape(monkeypatch):
    import ragtune.compare.metrics as metrics

    monkeypatch.setattr(metrics, "_BLOCK", 1000)  # 2000 resamples of 300 values: many blocks
    low, high = metrics.bootstrap_ci([float(i % 2) for i in range(300)])
    assert 0.4 < low < 0.5 < high < 0.6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"resamples": 0}, "resamples"), ({"level": 1.0}, "level"), ({"level": 0}, "level")],
)
def test_bootstrap_ci_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_ci([1.0, 0.0], **kwargs)


def test_bootstrap_ci_rejects_bad_values():
    with pytest.raises(ValueError, match="no values"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, float("nan")])


def test_summary_and_percentiles_are_plain_json_data():
    result = summary([1, 0, 1, 1])
    assert result["mean"] == 0.75 and result["n"] == 4
    # A resample's mean is k/4 with k ~ Binomial(4, 3/4): P(k <= 1) = 5.1% > 2.5% > P(k = 0) = 0.4%, so the
    # low end is 0.25; P(k = 4) = 32% > 2.5%, so the high end is 1.0. A list, as JSON writes it.
    assert result["ci95"] == [0.25, 1.0]
    assert all(type(x) is float for x in result["ci95"])
    assert summary([]) == {"mean": None, "ci95": None, "n": 0}
    assert percentiles(list(range(101))) == {"p50": 50.0, "p95": 95.0}
    assert percentiles([]) == {"p50": None, "p95": None}
