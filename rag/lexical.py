"""A question as an FTS5 query: its words, numbers and codes, each quoted so none is read as query syntax.

FTS5 gives meaning to `"`, `*`, `^`, `:`, `-`, `+`, parentheses and the words AND, OR, NOT and NEAR. A
question reaches it only as a list of double-quoted strings joined by OR: inside a string every character
is text, and the table's own tokenizer splits it (rag/store.py TOKENIZER). A code such as `XK-42.7` is
kept whole as one quoted string, so it matches only where its parts stand in that order.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# A term: letters and digits, with single inner joiners kept (XK-42.7, ISO-9001, 3.5mm, O'Brien, C++ ...).
_TERM = re.compile(r"[^\W_]+(?:[-./:'’+#_][^\W_]+)*[+#]*")
# Common question words: they match nearly every chunk, cost a long scan and add nothing to BM25.
_STOPWORDS = frozenset(
    "a an and are as at be by can could did do does for from had has have how i if in is it its me my of on "
    "or should so than that the their them there these they this to was we were what when where which who "
    "whom why will with would you your".split()
)
MAX_TERMS = 64  # a pasted page as a question still makes a bounded query
# A term in more chunks than this share (and this count) of a large index is left out of the query: BM25
# gives it almost no weight, yet ranking must score every chunk it matches. At 100k chunks this halves
# the p95 of a lexical search; a small index keeps every term.
COMMON_SHARE, COMMON_MIN = 0.05, 2000


def query_terms(question: str) -> list[str]:
    """The distinct terms of a question worth searching for, in order; stopwords only if nothing else."""
    terms = list(dict.fromkeys(match.group() for match in _TERM.finditer(question)))
    content = [term for term in terms if term.lower() not in _STOPWORDS]
    return (content or terms)[:MAX_TERMS]


def match_expression(
    question: str, counts: Callable[[list[str]], dict[str, int]] | None = None, total: int = 0
) -> str | None:
    """An FTS5 MATCH expression for `question` (any of its terms), or None when it has no terms at all.

    With `counts` (chunks matching each term) and `total` (chunks in the index), common terms are left out.
    """
    terms = query_terms(question)
    if not terms:
        return None
    if counts is not None and total > COMMON_MIN:
        terms = rare_terms(terms, counts(terms), total)
    return " OR ".join(quoted(term) for term in terms)


def rare_terms(terms: list[str], counts: dict[str, int], total: int) -> list[str]:
    """The terms no more common than COMMON_SHARE of `total` chunks; if every term is, the rarest one."""
    limit = max(COMMON_SHARE * total, COMMON_MIN)
    rare = [term for term in terms if counts.get(term, 0) <= limit]
    return rare or [min(terms, key=lambda term: counts.get(term, 0))]


def quoted(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'
