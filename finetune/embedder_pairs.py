"""Training triples for an embedder from documents alone: a pseudo-query per chunk, the chunk, a hard negative.

No gold questions exist, so each chunk writes its own query. `sentence` takes one of its sentences and, half
of the time, removes it from the chunk (the inverse cloze task: the model learns to find a passage from a
sentence about it, not only from shared words). `keyphrase` takes its rarest frequent words, as a user types a
search. `lm` reads questions the local LM wrote for the chunk (`ragtune data synth`). The negative is the chunk
of another document that shares the most rare words with the query (BM25), so the model must tell apart
passages that look alike, not just topics.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

QUERY_METHODS = ("sentence", "keyphrase", "lm")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"\w+", re.UNICODE)
_MIN_SENTENCE_WORDS = 5
# Words in more than this share of chunks (and more than _COMMON_MIN of them) carry no signal for a negative
# (the, of, and ...); skipping their long posting lists keeps mining fast on a large corpus.
_COMMON_SHARE, _COMMON_MIN = 0.2, 10
_BM25_K1, _BM25_B = 1.2, 0.75
_CANDIDATES = 20  # best-scoring chunks looked at for one of another document


@dataclass(frozen=True)
class Passage:
    id: str  # "PATH#ORDINAL", as ingest names chunks
    source: str  # the document it came from: a negative never comes from the same one
    text: str


@dataclass(frozen=True)
class Triple:
    query: str
    positive: str
    negative: str
    passage: str  # the positive's id

    def as_json(self) -> dict[str, str]:
        return {"query": self.query, "positive": self.positive, "negative": self.negative, "passage": self.passage}


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def sentence_query(text: str, rng: random.Random) -> tuple[str, str] | None:
    """(query, positive): one sentence of the chunk, and the chunk without it half of the time."""
    sentences = [s.strip() for s in _SENTENCE_END.split(text) if len(s.split()) >= _MIN_SENTENCE_WORDS]
    if len(sentences) < 2:  # a one-sentence chunk would be its own query
        return None
    sentence = rng.choice(sentences)
    rest = " ".join(text.replace(sentence, " ").split())
    return sentence, (rest if rng.random() < 0.5 and rest else text)


class LexicalIndex:
    """BM25 over the chunks in memory: the pseudo-queries' hard negatives."""

    def __init__(self, passages: list[Passage]) -> None:
        self.passages = passages
        self.terms = [Counter(words(p.text)) for p in passages]
        self.lengths = [sum(t.values()) for t in self.terms]
        self.mean_length = sum(self.lengths) / max(1, len(passages))
        self.postings: dict[str, list[int]] = defaultdict(list)
        for i, counts in enumerate(self.terms):
            for term in counts:
                self.postings[term].append(i)

    def idf(self, term: str) -> float:
        n, df = len(self.passages), len(self.postings.get(term, ()))
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    def is_common(self, term: str) -> bool:
        return len(self.postings.get(term, ())) > max(_COMMON_SHARE * len(self.passages), _COMMON_MIN)

    def best(self, query: str) -> list[int]:
        scores: Counter[int] = Counter()
        for term in set(words(query)):
            if self.is_common(term):
                continue
            idf = self.idf(term)
            for i in self.postings.get(term, ()):
                tf = self.terms[i][term]
                norm = _BM25_K1 * (1 - _BM25_B + _BM25_B * self.lengths[i] / self.mean_length)
                scores[i] += idf * tf * (_BM25_K1 + 1) / (tf + norm)
        return [i for i, _ in scores.most_common(_CANDIDATES)]

    def negative(self, query: str, source: str, rng: random.Random) -> str:
        """The best-matching chunk of another document, else a random one of another document."""
        for i in self.best(query):
            if self.passages[i].source != source:
                return self.passages[i].text
        others = [p for p in self.passages if p.source != source] or self.passages
        return rng.choice(others).text

    def keyphrase_query(self, index: int, rng: random.Random) -> str | None:
        """3-6 of the chunk's words ranked by tf x idf, as a keyword search."""
        counts = self.terms[index]
        ranked = sorted(
            (t for t in counts if not self.is_common(t) and not t.isdigit()),
            key=lambda t: (-counts[t] * self.idf(t), t),
        )
        if len(ranked) < 3:
            return None
        return " ".join(ranked[: rng.randint(3, 6)])


def build_triples(
    passages: list[Passage], method: str, seed: int, lm_queries: dict[str, list[str]] | None = None
) -> list[Triple]:
    """One triple per chunk that yields a query (per LM question for `lm`), shuffled with `seed`."""
    rng = random.Random(seed)
    index = LexicalIndex(passages)
    triples = []
    for i, passage in enumerate(passages):
        for query, positive in _queries(method, index, i, passage, rng, lm_queries or {}):
            triples.append(Triple(query, positive, index.negative(query, passage.source, rng), passage.id))
    rng.shuffle(triples)
    return triples


def _queries(
    method: str, index: LexicalIndex, i: int, passage: Passage, rng: random.Random, lm_queries: dict[str, list[str]]
) -> Iterable[tuple[str, str]]:
    if method == "sentence":
        made = sentence_query(passage.text, rng)
        return [made] if made else []
    if method == "keyphrase":
        query = index.keyphrase_query(i, rng)
        return [(query, passage.text)] if query else []
    return [(query, passage.text) for query in lm_queries.get(passage.id, [])]
