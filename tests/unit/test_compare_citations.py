"""Citation, groundedness and refusal figures over scored answers."""

from ragtune.compare.citations import citation_metrics, refusal_metrics


def row(
    answers,
    refused=False,
    cited=(),
    supports=(),
    grounded=True,
    contains=1.0,
    citation="written",
    scoring=None,
    prediction="",
    draft=None,
):
    return {
        "answers": list(answers),
        "prediction": prediction,
        "draft": draft,
        "refused": refused,
        "cited": list(cited),
        "supports": list(supports),
        "grounded": grounded,
        "contains": contains,
        "citation": citation if cited else None,
        "scoring": scoring,
    }


def test_citation_figures() -> None:
    rows = [
        row(["$45"], cited=[1], supports=[1]),  # right, cites a supporting source
        row(["7 days"], cited=[1, 2], supports=[2], citation="chosen"),  # half its citations support it
        row(["three"], cited=[], supports=[1], grounded=False, contains=0.0),  # wrong, cites nothing
        row([], refused=True, grounded=False, contains=1.0),  # a refusal: not counted as an answer
        row(["yes"], grounded=None),  # no retrieval: not counted
        row(["yes"], cited=[1], supports=[1], scoring="loglik"),  # chosen by likelihood: no text to check
    ]
    m = citation_metrics(rows)
    assert m["citation_rate"]["mean"] == 2 / 3 and m["citation_rate"]["n"] == 3
    assert m["written_citation_rate"]["mean"] == 1 / 3
    assert m["citation_precision"]["mean"] == (1 + 0.5) / 2 and m["citation_precision"]["n"] == 2
    assert m["supported_citation_on_correct"]["mean"] == 1.0 and m["supported_citation_on_correct"]["n"] == 2
    assert m["groundedness"]["mean"] == 2 / 3
    low, high = m["citation_rate"]["ci95"]
    assert 0 <= low <= 2 / 3 <= high <= 1


def test_refusal_precision_and_recall() -> None:
    rows = [
        row([], refused=True),  # right to refuse
        row([], refused=False),  # should have refused
        row(["$45"], refused=True, prediction="I could not find it.", draft="A card is $45."),  # a false refusal
        row(["7 days"], prediction="Seven days."),  # shown, and wrong
    ]
    m = refusal_metrics(rows)
    assert m["refusal_precision"]["mean"] == 0.5 and m["refusal_precision"]["n"] == 2
    assert m["refusal_recall"]["mean"] == 0.5 and m["refusal_recall"]["n"] == 2
    assert m["false_refusal_rate"]["mean"] == 0.5 and m["false_refusal_rate"]["n"] == 2
    # Without the check the refused draft would have been shown, and it held the answer.
    assert m["contains_unchecked"]["mean"] == 0.5 and m["contains_unchecked"]["n"] == 2
    none = refusal_metrics([row(["$45"])])
    assert none["refusal_precision"] == {"mean": None, "ci95": None, "n": 0}
    assert none["refusal_recall"]["n"] == 0


def test_the_report_shows_a_check_only_where_a_path_measured_it() -> None:
    from ragtune.compare.figures import _metric_rows

    def entry(**extra):
        metrics = {"contains": {"mean": 1.0, "ci95": [1.0, 1.0], "n": 2}, "refusals": 0, **extra}
        return {"metrics": metrics}

    rate = {"mean": 0.5, "ci95": [0.0, 1.0], "n": 2}
    empty = {"mean": None, "ci95": None, "n": 0}
    rows = dict(_metric_rows([entry(citation_rate=empty), entry(citation_rate=rate)], "contains"))
    assert rows["citation rate (answers citing a retrieved source as [n])"] == ["", "50.0% (0.0%-100.0%)"]
    assert not any(label.startswith("refusal recall") for label in rows)  # measured by neither path
