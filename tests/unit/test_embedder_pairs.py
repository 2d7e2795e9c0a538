"""Training triples for an embedder: queries made from the chunk itself, negatives from other documents only."""

from __future__ import annotations

import random

import pytest

from finetune.embedder_pairs import LexicalIndex, Passage, build_triples, sentence_query

TEXTS = {
    "kiln.txt#0": "Error code E7 means the door switch is open. Close the kiln door firmly and restart.",
    "kiln.txt#1": "The kiln heats to 1300 degrees. Firing a full load of stoneware takes nine hours.",
    "oven.txt#0": "Error code E7 on the oven means the door sensor is dirty. Wipe the door sensor with a cloth.",
    "lib.txt#0": "DVDs can be borrowed for seven days. Books can be borrowed for three weeks.",
    "lib.txt#1": "A card costs forty-five dollars a year for non-residents. Residents of the town pay nothing.",
}
PASSAGES = [Passage(key, key.split("#")[0], text) for key, text in TEXTS.items()]


def test_sentence_query_is_a_sentence_of_the_chunk_and_sometimes_removed() -> None:
    text = PASSAGES[0].text
    seen_removed = seen_whole = False
    for seed in range(20):
        query, positive = sentence_query(text, random.Random(seed))
        assert query in text
        if query in positive:
            seen_whole = True
            assert positive == text
        else:
            seen_removed = True
    assert seen_removed and seen_whole
    assert sentence_query("Only one sentence of words here.", random.Random(0)) is None


@pytest.mark.parametrize("method", ["sentence", "keyphrase"])
def test_negative_is_the_look_alike_passage_of_another_document(method: str) -> None:
    triples = build_triples(PASSAGES, method, seed=0)
    assert len(triples) == len(PASSAGES)
    by_passage = {t.passage: t for t in triples}
    source = {p.id: p.source for p in PASSAGES}
    text_source = {p.text: p.source for p in PASSAGES}
    for triple in triples:
        assert text_source.get(triple.negative) != source[triple.passage]
    # The kiln's E7 chunk and the oven's share "error code E7 ... door": each is the other's hard negative.
    if method == "sentence" and "E7" in by_passage["kiln.txt#0"].query:
        assert by_passage["kiln.txt#0"].negative == PASSAGES[2].text


def test_keyphrase_query_uses_the_chunks_distinctive_words() -> None:
    index = LexicalIndex(PASSAGES)
    query = index.keyphrase_query(3, random.Random(0))
    assert query is not None and 3 <= len(query.split()) <= 6
    assert set(query.split()) <= set(PASSAGES[3].text.lower().replace(".", "").split())


def test_lm_queries_are_used_as_given_and_chunks_without_one_are_left_out() -> None:
    triples = build_triples(PASSAGES, "lm", seed=0, lm_queries={"lib.txt#0": ["How long can I keep a DVD?"]})
    assert [(t.query, t.positive) for t in triples] == [("How long can I keep a DVD?", PASSAGES[3].text)]


def test_the_same_seed_gives_the_same_triples() -> None:
    assert build_triples(PASSAGES, "sentence", seed=3) == build_triples(PASSAGES, "sentence", seed=3)
