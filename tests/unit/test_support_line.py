"""The support verdict in words, as `ragtune ask` prints it under the answer."""

from __future__ import annotations

from models.answer import Answer, Attribution
from ragtune.cli.index import support_line

TEXT = "DVDs are lent for 7 days. The café opens at 7."


def answer(support: str, *kinds: str) -> Answer:
    spans = [(0, 25), (26, 46)]
    sentences = [Attribution(a, b, kind, 1 if kind != "unsupported" else None) for (a, b), kind in zip(spans, kinds)]
    supports = [1] if "supported" in kinds else []
    return Answer("q", TEXT, supports=supports, support=support, sentences=sentences)


def test_each_verdict_has_its_words() -> None:
    assert support_line(answer("supported", "supported", "supported")) == (
        "Supported: every sentence is found in the sources ([1])."
    )
    assert support_line(answer("partly", "supported", "unsupported")) == (
        "Partly supported: 1 of 2 sentences found in the sources ([1]); check the others."
    )
    assert support_line(answer("unsupported", "unsupported", "unsupported")).startswith(
        "Not supported: no sentence of this answer is found"
    )


def test_sentences_found_in_passages_that_do_not_cover_the_question_say_so() -> None:
    """The question check made it unsupported, not its sentences: the words say which."""
    line = support_line(answer("unsupported", "supported", "supported"))
    assert line.startswith("Not supported: the retrieved sources do not cover what the question asks")


def test_refusals_and_closed_book_answers_have_no_verdict_line() -> None:
    assert support_line(Answer("q", "I could not find the answer in the documents.", refused=True)) is None
    assert support_line(Answer("q", "Paris.")) is None
