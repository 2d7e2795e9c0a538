"""The lexical index: questions become quoted FTS5 terms; codes, numbers and hyphenated terms are found as written."""

import random
from pathlib import Path

import pytest

from rag.lexical import MAX_TERMS, match_expression, query_terms
from rag.store import ChunkStore

PASSAGES = [
    ("Calibration", "Set clamp XK-42.7 to 18 newton metres before shipping."),
    ("Quality", "Our plant is certified to ISO-9001 and audited every spring."),
    ("Audio", "The headset takes a 3.5mm jack; older models used 2.5 mm plugs."),
    ("Noise", "Part 42 holds 7 washers, and the XK range ships in blue crates."),
    ("Cards", "Non-resident cards cost $45 per year at the front desk."),
]


@pytest.fixture
def store(tmp_path: Path) -> ChunkStore:
    store = ChunkStore(tmp_path / "chunks.sqlite")
    store.upgrade()
    for n, (heading, text) in enumerate(PASSAGES):
        store.add_document(f"/d{n}.txt", "/", f"{n}" * 64, 1, [("", text, f"manual > {heading}")])
    store.commit()
    return store


def search(store: ChunkStore, question: str) -> list[int]:
    expression = match_expression(question)
    return [chunk for chunk, _ in store.search_lexical(expression, 5)] if expression else []


def test_terms_keep_codes_whole_and_drop_question_words() -> None:
    assert query_terms("What is the torque for XK-42.7, ISO-9001 and a 3.5mm jack?") == [
        "torque",
        "XK-42.7",
        "ISO-9001",
        "3.5mm",
        "jack",
    ]
    assert query_terms("What is it?") == ["What", "is", "it"]  # nothing else to search for
    assert query_terms("?!* --") == [] and match_expression("?!* --") is None


def test_every_term_is_quoted_so_none_is_query_syntax() -> None:
    assert match_expression('NEAR(p q) "x" col:y -z') == '"NEAR" OR "p" OR "q" OR "x" OR "col:y" OR "z"'
    assert len(query_terms(" ".join(f"w{i}" for i in range(500)))) == MAX_TERMS


@pytest.mark.parametrize(
    "question,expected",
    [
        ("Which setting does XK-42.7 use?", 0),
        ("Are you ISO-9001 certified?", 1),
        ("Does it take a 3.5mm plug?", 2),
        ("xk-42.7", 0),  # case folded
        ("How much are non-resident cards?", 4),
    ],
)
def test_codes_numbers_and_hyphenated_terms_are_found_as_written(store: ChunkStore, question: str, expected: int):
    assert search(store, question)[0] == expected


def test_a_code_matches_only_where_its_parts_stand_in_order(store: ChunkStore) -> None:
    """Chunk 3 holds `XK`, `42` and `7` apart; only chunk 0 holds the code XK-42.7."""
    assert search(store, "XK-42.7") == [0]


def test_headings_are_searched_too(store: ChunkStore) -> None:
    assert search(store, "calibration") == [0]


@pytest.mark.parametrize(
    "question",
    ['"', '""', "*", "a*", "NEAR", "NEAR(a b, 2)", "AND OR NOT", "col:x", "-x", "^x", "(x", "x)", "{x}", "+", "'"],
)
def test_fts5_syntax_in_a_question_never_errors(store: ChunkStore, question: str) -> None:
    search(store, question)


def test_random_punctuation_soup_never_errors(store: ChunkStore) -> None:
    rng = random.Random(7)
    alphabet = "ab1 -_.:*\"^()+{}NEARORANDNOT'`~,;/\\#é\u0301\t"
    for _ in range(300):
        search(store, "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 30))))


def test_removing_a_document_removes_its_words(store: ChunkStore) -> None:
    store.remove_document("/d0.txt")
    assert search(store, "XK-42.7") == [] and store.lexical_rows() == store.chunk_count() == 4
    [new] = store.add_document("/d0.txt", "/", "f" * 64, 1, [("", "Clamp XK-42.7 now takes 20 newton metres.")])
    assert search(store, "XK-42.7") == [new] and store.lexical_rows() == 5


def test_common_terms_leave_a_large_index_query_but_not_a_small_one() -> None:
    from rag.lexical import rare_terms

    counts = {"population": 9000, "Warsaw": 40, "1944": 700, "city": 30000}
    terms = ["population", "Warsaw", "1944", "city"]
    assert rare_terms(terms, counts, total=100_000) == ["Warsaw", "1944"]  # over 5,000 of 100,000 chunks: left out
    assert rare_terms(["city", "population"], counts, total=100_000) == ["population"]  # all common: the rarest
    assert match_expression("Warsaw city population?", lambda t: counts, total=100_000) == '"Warsaw"'
    assert (
        match_expression("Warsaw city population?", lambda t: counts, total=1500)
        == '"Warsaw" OR "city" OR "population"'
    )
