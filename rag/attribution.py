"""Which passage supports each sentence of an answer, and where in it: per-sentence attribution, pure and cheap.

Each answer sentence is checked against each retrieved passage with the lexical check of rag.grounding (its
numbers and names must appear there, and enough of its key words); the passage covering most of its terms is
its source, and the passage sentence sharing most of its terms is the supporting span (character offsets in
the passage text, for a viewer to highlight). A sentence is `supported` when its source passes the check,
`partly` when a passage holds some of its terms but not enough, `unsupported` otherwise. The answer is
`supported` when every sentence with something to check is, `unsupported` when none is, `partly` between.

The question is weighed too: which of its names and numbers the passages hold, and what share of its key terms
(`coverage`, `covers`); passages short of them are about something else, and an answer read from them is
`unsupported` whatever its sentences share with them (a small model answers "When did Tesla die?" from a passage
about Edison's death; rag.question_match weighs these signals with the passages' closeness in meaning). Nothing
here runs a model: it costs string matching over text already retrieved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher

from models.answer import Attribution
from rag.grounding import Terms, answer_terms, holds, text_terms

SUPPORTED, PARTLY, UNSUPPORTED = "supported", "partly", "unsupported"
# A passage holding at least this share of a sentence's terms (but failing the check) supports it partly.
PARTLY_SHARE = 0.34
# Passages cover a question when they hold all its names and numbers and at least this share of its key terms:
# the best threshold rule's share on a calibration set's dev questions (bench/support_questions.py). The answerer
# asks it only without a question vector; otherwise rag.question_match's model weighs the share held.
QUESTION_SHARE = 0.2
# A question's name counts as held where a passage spells a word this much alike (difflib's ratio, the same first
# letter): questions misspell names ("the Maastrich Treaty", "John Sheeshanks") that the documents spell right.
ALIKE = 0.8
# A sentence ends at . ! or ? followed by a space or the end (so "$45.00" and "9.5" stay whole), or at a newline.
_SENTENCE = re.compile(r"\S(?:.*?)(?:[.!?]+(?=\s|$)|(?=\n)|$)", re.S)


@dataclass(frozen=True)
class Rule:
    """What "supported" means; the defaults are the measured choice (docs/trust.md)."""

    # Share of key content words (besides numbers and names) that must appear (rag.support_share): 0 by
    # default, chosen on the dev part of a calibration set of real questions (docs/trust.md), where every
    # higher share flagged more right answers than the 5% allowed.
    share: float = 0.0
    # Key words the sentence shares with the question must all appear: off, since small models echo the
    # question's words ("nationality", "profession") where documents say "American", "coach".
    echo: bool = False


DEFAULT_RULE = Rule()


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of `text`, citation markers included, surrounding space excluded."""
    return [(m.start(), m.start() + len(m.group().rstrip())) for m in _SENTENCE.finditer(text) if m.group().strip()]


def attribute(
    answer: str, passages: list[tuple[int, str]], question: str = "", ignore: str = "", rule: Rule = DEFAULT_RULE
) -> list[Attribution]:
    """Each sentence of `answer` with its best supporting passage (by number) and span; `ignore` is the refusal
    sentence (it has nothing to check)."""
    asked = answer_terms(question) if question and rule.echo else Terms()
    indexed = [(number, text, text_terms(text)) for number, text in passages]
    found = []
    for start, end in sentences(answer):
        terms = answer_terms(answer[start:end], ignore)
        if terms.empty:
            continue
        best, best_cover, best_ok = None, 0.0, False
        for number, text, (numbers, words) in indexed:
            ok, cover = holds(terms, numbers, words, asked, rule.share)
            if (ok, cover) > (best_ok, best_cover):
                best, best_cover, best_ok = (number, text), cover, ok
        if best is None:
            found.append(Attribution(start, end, UNSUPPORTED))
            continue
        support = SUPPORTED if best_ok else PARTLY if best_cover >= PARTLY_SHARE else UNSUPPORTED
        found.append(Attribution(start, end, support, best[0], _span(terms, best[1])))
    return found


def covers(
    question: str,
    passages: list[tuple[int, str]],
    share: float = QUESTION_SHARE,
    spelled: bool = False,
    alike: float = ALIKE,
) -> bool:
    """Whether the passages, together, hold every name and number of `question` and `share` of its key terms.

    Spelled numbers count only with `spelled` ("What are two examples of ...?" asks for two things, it names no
    fact); a name is held where a passage has a word spelled `alike` to it (1: only the same word).
    """
    named, held = coverage(question, passages, spelled, alike)
    return named and held >= share


def coverage(
    question: str, passages: list[tuple[int, str]], spelled: bool = False, alike: float = ALIKE
) -> tuple[bool, float]:
    """Whether the passages hold every name and number of `question`, and the share of its key terms they hold
    (`covers` has the settings); a question with nothing to check is covered."""
    terms = answer_terms(question, spelled=spelled)
    wanted = terms.numbers | terms.names | terms.words
    if not wanted:
        return True, 1.0
    held: set[str] = set()
    for _, text in passages:
        numbers, words = text_terms(text)
        held |= numbers | words
    found = (wanted & held) | {name for name in terms.names - held if spelled_alike(name, held, alike)}
    return terms.numbers | terms.names <= found, len(found) / len(wanted)


def spelled_alike(name: str, words: set[str], alike: float) -> bool:
    """Whether `words` hold one spelled like `name` (4 letters or more): the same first letter, at most two letters
    longer or shorter, and difflib's similarity ratio at least `alike`."""
    if alike >= 1 or len(name) < 4:
        return False
    return any(
        word[:1] == name[:1] and abs(len(word) - len(name)) <= 2 and SequenceMatcher(None, name, word).ratio() >= alike
        for word in words
    )


def verdict(attributions: list[Attribution], covered: bool = True) -> str:
    """The answer's verdict from its sentences': all supported, none, or between (nothing to check: unsupported);
    unsupported too when the passages do not answer the question (`covered` false: rag.question_match)."""
    if not covered:
        return UNSUPPORTED
    kinds = {a.support for a in attributions}
    if kinds == {SUPPORTED}:
        return SUPPORTED
    return PARTLY if SUPPORTED in kinds or PARTLY in kinds else UNSUPPORTED


def supporting_sources(attributions: list[Attribution]) -> list[int]:
    """The passages that support at least one sentence, those supporting most sentences first (then in the
    order the answer leans on them)."""
    leaned = [a.source for a in attributions if a.support == SUPPORTED and a.source is not None]
    first = list(dict.fromkeys(leaned))
    return sorted(first, key=lambda number: (-leaned.count(number), first.index(number)))


def _span(terms: Terms, text: str) -> tuple[int, int]:
    """The passage sentence holding most of the answer sentence's terms (the first, on a tie)."""
    wanted = terms.numbers | terms.names | terms.words
    best, best_count = (0, len(text)), -1
    for start, end in sentences(text):
        numbers, words = text_terms(text[start:end])
        count = len(wanted & (numbers | words))
        if count > best_count:
            best, best_count = (start, end), count
    return best
