"""The lexical support check: an answer's numbers, names and key words must appear in the text."""

import pytest

from rag.grounding import SUPPORT_SHARE, answer_terms, check_support, strip_citations
from rag.prompt import NOT_FOUND, cited_numbers

CARDS = (
    "People who live outside Millbrook pay $45 per year for a non-resident card. Visitors can choose a "
    "three-month visitor pass for $15 instead."
)
BRANCH = "Eastside Branch, 480 Orchard Road. The Eastside Branch is closed on Sundays and Mondays."


def test_terms_split_numbers_names_and_key_words() -> None:
    terms = answer_terms("The Eastside Branch is closed on Sundays and Mondays [2].")
    assert terms.numbers == frozenset() and terms.names == {"eastside", "branch", "sunday", "monday"}
    assert terms.words == {"closed"}  # "The" opens the sentence; "is", "on", "and" carry nothing
    assert answer_terms("A card costs $45.00, renewed three times.").numbers == {"45", "3"}
    assert strip_citations("Yes [1] and [Document 2, 3].") == "Yes   and  ."


@pytest.mark.parametrize(
    ("answer", "text", "supported"),
    [
        ("A non-resident card costs $45 per year [1].", CARDS, True),
        ("A non-resident card costs $50 per year [1].", CARDS, False),  # a number the text lacks
        ("The visitor pass lasts three months.", CARDS, True),  # "three" = the text's "three"
        ("The visitor pass lasts 3 months.", CARDS, True),
        ("The Eastside Branch is closed on Sundays and Mondays [1].", BRANCH, True),
        ("The Westside Branch is closed on Sundays and Mondays.", BRANCH, False),  # a name the text lacks
        # Key words: the café is the claim, even though 10:30 is in the text.
        ("The library café opens at 10:30 every morning.", "Story time is at 10:30 in the library.", False),
        (NOT_FOUND, CARDS, False),  # a refusal claims nothing, so nothing supports it
        ("", CARDS, False),
    ],
)
def test_check_support(answer: str, text: str, supported: bool) -> None:
    assert check_support(answer, text, NOT_FOUND).supported is supported


def test_unsupported_names_what_the_text_lacks() -> None:
    verdict = check_support("The Westside Branch opens at 9:00.", BRANCH)
    assert not verdict.supported and {"westside", "9:00"} <= set(verdict.missing)


def test_key_word_share_is_the_threshold() -> None:
    # Five key words, three found (0.6): supported at SUPPORT_SHARE = 0.6; four missing of five is not.
    assert SUPPORT_SHARE == 0.6
    text = "alpha bravo charlie"
    assert check_support("alpha bravo charlie delta echo", text).supported
    assert not check_support("alpha delta echo foxtrot golf", text).supported


def test_words_the_answer_shares_with_the_question_must_all_be_found() -> None:
    question = "How much does it cost to borrow a museum pass?"
    answer = "It costs $15 to borrow a museum pass."
    text = CARDS + " A replacement card costs $3. Members borrow up to 30 items."
    assert check_support(answer, text).supported  # three of four key words and the number: enough alone
    verdict = check_support(answer, text, question)
    assert not verdict.supported and "museum" in verdict.missing  # but the museum is what was asked about


def test_the_markers_stripped_are_the_markers_cited() -> None:
    # One definition of a citation marker: what rag.prompt counts as a citation is what support ignores.
    for marker in ("[1]", "[1, 2]", "[Document 3]", "[doc 2; source 4]", "[ 5 ]", "[a]", "[1-2]", "[x 1]"):
        text = f"The fee is 40 {marker}."
        assert bool(cited_numbers(text)) == (strip_citations(text) != text), marker
