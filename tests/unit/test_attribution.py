"""Per-sentence attribution: each answer sentence's supporting passage and span, and the answer's verdict."""

from __future__ import annotations

import pytest

from rag.attribution import (
    PARTLY,
    SUPPORTED,
    UNSUPPORTED,
    Rule,
    attribute,
    coverage,
    covers,
    sentences,
    supporting_sources,
    verdict,
)
from rag.prompt import NOT_FOUND

CARDS = "Library cards are free for residents. Non-residents pay $45 per year for a card. Cards last three years."
HOURS = "The Eastside Branch is closed on Sundays. It opens at 9:00 on weekdays."
PASSAGES = [(1, HOURS), (2, CARDS)]


def test_sentences_keep_decimals_and_markers_whole() -> None:
    text = "A card costs $45.00 a year [2]. It lasts 3 years!  Renew it online?"
    spans = sentences(text)
    assert [text[a:b] for a, b in spans] == ["A card costs $45.00 a year [2].", "It lasts 3 years!", "Renew it online?"]


def test_each_sentence_gets_its_passage_and_the_span_holding_its_terms() -> None:
    answer = "A non-resident card costs $45 per year. The Eastside Branch is closed on Sundays."
    found = attribute(answer, PASSAGES, "How much is a card, and when is Eastside closed?")
    assert [(a.support, a.source) for a in found] == [(SUPPORTED, 2), (SUPPORTED, 1)]
    first, second = found
    assert answer[first.start : first.end] == "A non-resident card costs $45 per year."
    assert CARDS[slice(*first.span)] == "Non-residents pay $45 per year for a card."
    assert HOURS[slice(*second.span)] == "The Eastside Branch is closed on Sundays."
    assert verdict(found) == SUPPORTED and supporting_sources(found) == [2, 1]


def test_a_wrong_number_is_unsupported_and_an_answer_half_right_is_partly_supported() -> None:
    wrong = attribute("A card costs $60 per year.", PASSAGES)
    assert wrong[0].support in (PARTLY, UNSUPPORTED) and verdict(wrong) != SUPPORTED
    half = attribute("A card costs $45 per year. The café opens at 7:00.", PASSAGES)
    assert [a.support for a in half][0] == SUPPORTED and verdict(half) == PARTLY
    assert supporting_sources(half) == [2]


def test_nothing_to_check_is_unsupported_and_the_refusal_sentence_is_ignored() -> None:
    assert attribute(NOT_FOUND, PASSAGES, ignore=NOT_FOUND) == []
    assert verdict([]) == UNSUPPORTED
    assert verdict(attribute("Zebras migrate across the Serengeti.", PASSAGES)) == UNSUPPORTED


def test_the_question_echo_rule_and_the_share_are_settings() -> None:
    # "museum" is the question's word, in no passage: with the echo rule the sentence is not supported.
    answer = "Borrowing a museum pass costs $45 per year."
    question = "How much does a museum pass cost?"
    assert attribute(answer, PASSAGES, question, rule=Rule(echo=True))[0].support != SUPPORTED
    assert (
        attribute("A card is $45 per year for non-residents.", PASSAGES, question, rule=Rule(echo=False))[0].support
        == SUPPORTED
    )
    assert attribute("Pay $45 per year for a shiny card.", PASSAGES, rule=Rule(share=1.0))[0].support != SUPPORTED
    assert attribute("Pay $45 per year for a shiny card.", PASSAGES, rule=Rule(share=0.0))[0].support == SUPPORTED


@pytest.mark.parametrize("answer", ["", "   ", "[1]", "The."])
def test_answers_without_terms_have_no_sentences(answer: str) -> None:
    assert attribute(answer, PASSAGES) == []


def test_passages_about_something_else_leave_the_answer_unsupported() -> None:
    """A question whose names the passages never mention: whatever the answer shares with them, it is unsupported."""
    answer = "The Eastside Branch is closed on Sundays."
    asked = "When is the Riverside Branch closed?"
    assert covers("When is the Eastside Branch closed?", PASSAGES)
    assert not covers(asked, PASSAGES)  # "Riverside" appears in no passage
    found = attribute(answer, PASSAGES, asked)
    assert verdict(found) == SUPPORTED  # each sentence alone is found in the passages...
    assert verdict(found, covers(asked, PASSAGES)) == UNSUPPORTED  # ...but they are not about what was asked


def test_a_question_is_covered_by_a_share_of_its_key_terms() -> None:
    question = "How much do non-residents pay for a library card in Springfield county?"
    assert not covers(question, PASSAGES)  # "Springfield" is a name the passages lack
    general = "How much do non-residents pay for a library card each year, renewal fees and late fines included?"
    assert covers(general, PASSAGES, share=0.4) and not covers(general, PASSAGES, share=0.9)
    assert covers("What is it?", PASSAGES)  # nothing to check in the question


def test_a_question_counting_what_it_asks_for_names_no_number() -> None:
    """A question's spelled number can count what it asks for ("two things"): the passages need not hold it."""
    question = "What are two things non-residents pay for at the Eastside Branch?"
    assert covers(question, PASSAGES)
    assert not covers(question, PASSAGES, spelled=True)  # as first measured: "two" had to appear
    assert covers("How much is the card after 45 days?", PASSAGES, share=0.2)  # digits are still required...
    assert not covers("How much is the card after 46 days?", PASSAGES, share=0.2)  # ...and must be found


def test_a_misspelled_name_in_the_question_is_found_spelled_alike() -> None:
    question = "When is the Eastsid Branch closed?"  # one letter short of the passage's "Eastside"
    assert covers(question, PASSAGES) and not covers(question, PASSAGES, alike=1.0)
    assert not covers("When is the Westside Branch closed?", PASSAGES)  # another first letter: another branch
    assert not covers("When is the Eas Branch closed?", PASSAGES)  # too short to match loosely
    named, held = coverage("When is the Riverside Branch closed?", PASSAGES)
    assert not named and held == pytest.approx(2 / 3)  # "branch" and "closed" held, "riverside" not
    assert coverage("What is it?", PASSAGES) == (True, 1.0)
