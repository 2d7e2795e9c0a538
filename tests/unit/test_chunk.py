import re

import pytest

from rag.chunk import chunk_long_text, chunk_spans, chunk_text


def words(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"\S+", text)]


def test_windows_cover_every_token_with_the_requested_overlap() -> None:
    text = " ".join(f"w{i}" for i in range(100))
    spans = chunk_spans(text, words(text), size=20, overlap=5)
    assert spans[0] == (0, 20)
    assert spans[-1][1] == 100
    for (a_start, a_stop), (b_start, _) in zip(spans, spans[1:]):
        assert a_stop - b_start == 5  # no sentence ends here, so windows are full and overlap exactly
        assert b_start > a_start
    assert all(stop - start <= 20 for start, stop in spans)


def test_window_ends_at_a_sentence_boundary_in_its_last_quarter() -> None:
    text = " ".join(f"w{i}" for i in range(17)) + ". " + " ".join(f"x{i}" for i in range(30))
    spans = chunk_spans(text, words(text), size=20, overlap=4)
    assert spans[0] == (0, 17)  # token 16 ends the sentence, within the last quarter of 20


def test_chunk_text_keeps_original_characters_and_strips_edges() -> None:
    text = "Alpha beta gamma.\nDelta epsilon zeta.\n"
    chunks = chunk_text(text, words(text), size=3, overlap=1)
    assert chunks[0].text == "Alpha beta gamma."
    assert text[chunks[0].start : chunks[0].end] == "Alpha beta gamma."
    assert "Delta" in " ".join(c.text for c in chunks)


def test_short_text_is_one_chunk_and_empty_text_none() -> None:
    assert [c.text for c in chunk_text("one two", words("one two"), 10, 2)] == ["one two"]
    assert chunk_text("", [], 10, 2) == []


@pytest.mark.parametrize("size,overlap", [(0, 0), (10, 10), (10, -1)])
def test_bad_sizes_are_rejected(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="overlap"):
        chunk_spans("a b", [(0, 1), (2, 3)], size, overlap)


def test_single_token_progress_when_overlap_is_large() -> None:
    text = " ".join(f"w{i}" for i in range(12))
    spans = chunk_spans(text, words(text), size=4, overlap=3)
    starts = [s for s, _ in spans]
    assert starts == sorted(set(starts)) and spans[-1][1] == 12


@pytest.mark.parametrize("window", [300, 451, 1000, 10_000])  # each holds several 12-token chunks
def test_long_text_in_windows_gives_the_chunks_of_one_pass(window: int) -> None:
    import random

    rng = random.Random(window)
    sentences = [" ".join(f"t{rng.randrange(999)}" for _ in range(rng.randint(3, 15))) for _ in range(120)]
    text = ". ".join(sentences).replace("t1", "t1\n")
    calls: list[int] = []

    def tokenize(piece: str) -> list[tuple[int, int]]:
        calls.append(len(piece))
        return words(piece)

    whole = chunk_text(text, words(text), size=12, overlap=3)
    assert chunk_long_text(text, tokenize, 12, 3, window=window) == whole
    assert max(calls) <= window  # never more than one window tokenised at once


def test_long_text_handles_a_window_without_whitespace() -> None:
    text = "x" * 300 + " tail words here"
    chunks = chunk_long_text(text, words, 4, 1, window=100)
    assert "".join(c.text for c in chunks).replace(" ", "").startswith("x" * 100)
    assert chunks[-1].text.endswith("here")
