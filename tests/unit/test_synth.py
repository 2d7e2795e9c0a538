"""The pure parts of QA synthesis: parsing the LM's pairs and rewrites, and the grounding filter."""

from finetune.synth import is_grounded, parse_pairs, parse_paraphrases

CHUNK = (
    "The Riverside library opens at nine and closes at eight. A non-resident card costs 45 dollars per year, "
    "and 1,200 new books arrive every spring."
)


def test_parse_pairs_well_formed() -> None:
    text = "Q: When does the library open?\nA: At nine.\nQ: What does a card cost?\nA: 45 dollars per year"
    assert parse_pairs(text) == [
        ("When does the library open?", "At nine."),
        ("What does a card cost?", "45 dollars per year"),
    ]


def test_parse_pairs_messy_output() -> None:
    text = """Sure! Here are the pairs:

1. Q: When does the library open?

   A: At nine.
2) **Q2:** What does a card cost?
**A2:** "45 dollars"
- Question 3: Who runs the library?
Q: How many books arrive each spring?
Answer: 1,200 new books
A: a second answer is ignored
Q: A question left without an answer?
"""
    assert parse_pairs(text) == [
        ("When does the library open?", "At nine."),
        ("What does a card cost?", "45 dollars"),
        ("How many books arrive each spring?", "1,200 new books"),
    ]


def test_parse_pairs_empty_and_gibberish() -> None:
    assert parse_pairs("") == []
    assert parse_pairs("lorem ipsum\nA: an answer before any question\nQ:\nA:") == []


def test_parse_paraphrases_keeps_questions_only() -> None:
    text = "Here are two rewrites:\n1. At what hour does the library open?\n- Q: When is the library open from?\n\n"
    assert parse_paraphrases(text) == ["At what hour does the library open?", "When is the library open from?"]


def test_grounded_answers_copied_from_the_chunk() -> None:
    assert is_grounded("At nine.", CHUNK)
    assert is_grounded("45 dollars per year", CHUNK)
    assert is_grounded("1200 new books", CHUNK)  # "1,200" and "1200" are the same number
    assert is_grounded("The RIVERSIDE Library!", CHUNK)


def test_number_not_in_the_chunk_is_rejected_even_with_overlap() -> None:
    assert not is_grounded("50 dollars per year", CHUNK)
    assert not is_grounded("non-resident card costs 4 dollars per year", CHUNK)


def test_ungrounded_and_stopword_only_answers_rejected() -> None:
    assert not is_grounded("the museum on the hill", CHUNK)
    assert not is_grounded("Yes, it is.", CHUNK)
    assert not is_grounded("", CHUNK)
    assert not is_grounded("...", CHUNK)


def test_min_overlap_threshold() -> None:
    answer = "nine bells ring"  # one of three content words in the chunk
    assert not is_grounded(answer, CHUNK)
    assert is_grounded(answer, CHUNK, min_overlap=0.3)
