"""Is an answer supported by a text? A lexical check: its numbers, names and key words must appear there.

Pure functions over strings. An answer is *supported* by a text when every number and every name in the
answer appears in it, every key word it shares with the question does, and at least SUPPORT_SHARE of its
other key content words do. Citation
markers ([n]) and the fixed "not in the documents" sentence are ignored. Words are compared lowercased,
with a plural or possessive "s" dropped; spelled numbers up to twenty count as their digits ("three" = 3),
and "$45.00" as "45". It is a check a user can verify by reading, not a judgement of meaning: a
paraphrase with other words is reported unsupported, and an answer that copies the text's words in a
wrong order is reported supported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rag.prompt import CITATION

# Share of the answer's key content words (not numbers or names) that must appear in the text.
SUPPORT_SHARE = 0.6

_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty"
).split()
_SPELLED = {word: str(value) for value, word in enumerate(_NUMBER_WORDS)}
# Function words and the words answers use to frame a fact; they carry no content to check.
_STOP = set(
    """a about above after again all also am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her
    here hers him his how i if in into is it its itself just may me might more most must my no nor not of off
    on once only or other our ours out over own per same she should so some such than that the their theirs
    them then there these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours yes according document documents source sources context
    answer question based provided text states say says said mentioned listed given cited cite information
    first second third following""".split()
)
_TOKEN = re.compile(r"\d+(?:[.,:]\d+)*|[^\W\d_]+(?:['’][^\W\d_]+)*")


@dataclass(frozen=True)
class Terms:
    """What an answer claims, as checkable terms."""

    numbers: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()
    words: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not (self.numbers or self.names or self.words)


@dataclass(frozen=True)
class Support:
    """The verdict for one answer against one text, with the terms the text lacks."""

    supported: bool
    missing: list[str] = field(default_factory=list)


def strip_citations(text: str) -> str:
    return CITATION.sub(" ", text)


def _stem(word: str) -> str:
    word = word.lower().replace("’", "'")
    word = word[:-2] if word.endswith("'s") else word
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


def _number(token: str) -> str:
    """A number as compared: thousands separators dropped, and a zero fraction ("45.00") dropped."""
    token = token.replace(",", "") if re.fullmatch(r"\d{1,3}(,\d{3})+", token) else token
    return re.sub(r"\.0+$", "", token)


def answer_terms(answer: str, ignore: str = "", spelled: bool = True) -> Terms:
    """Numbers, names (capitalised words not opening a sentence) and key words of `answer`.

    Sentences equal to `ignore` (the refusal sentence) are dropped first. With `spelled` false, spelled numbers
    are left out: in a question ("What are two examples of ...?") they count what is asked for, not a fact to find.
    """
    text = strip_citations(answer)
    if ignore:
        text = re.sub(re.escape(ignore.rstrip(".")) + r"\.?", " ", text, flags=re.I)
    numbers, names, words = set(), set(), set()
    sentence_start = True
    for match in _TOKEN.finditer(text):
        token = match.group()
        before = text[: match.start()].rstrip()
        sentence_start = not before or before[-1] in ".!?:\n\"'(*-"
        if token[0].isdigit():
            numbers.add(_number(token))
        elif token.lower() in _SPELLED:
            if spelled:
                numbers.add(_SPELLED[token.lower()])
        elif token.lower() in _STOP or len(token) < 3:
            continue
        elif token[0].isupper() and not sentence_start:
            names.add(_stem(token))
        else:
            words.add(_stem(token))
    return Terms(frozenset(numbers), frozenset(names), frozenset(words - names))


def text_terms(text: str) -> tuple[set[str], set[str]]:
    """Every number (spelled ones as digits) and every stemmed word of a source text."""
    numbers, words = set(), set()
    for token in _TOKEN.findall(text):
        if token[0].isdigit():
            numbers.add(_number(token))
            numbers.update(_number(part) for part in re.split(r"[.,:]", token) if part)
        elif token.lower() in _SPELLED:
            numbers.add(_SPELLED[token.lower()])
        else:
            words.add(_stem(token))
    return numbers, words


def check_support(answer: str, text: str, question: str = "", ignore: str = "") -> Support:
    """Whether `text` supports `answer`: all its numbers and names, and SUPPORT_SHARE of its key words.

    Key words the answer shares with `question` must all be there: they name what was asked about, so
    "It costs $15 to borrow a museum pass" is not supported by a text that prices a visitor pass at $15 but
    never mentions a museum. An answer with nothing to check (empty, or only the refusal sentence) is not
    supported.
    """
    terms = answer_terms(answer, ignore)
    if terms.empty:
        return Support(False, [])
    numbers, words = text_terms(text)
    asked = answer_terms(question) if question else Terms()
    supported, _ = holds(terms, numbers, words, asked, SUPPORT_SHARE)
    missing = sorted(terms.numbers - numbers) + sorted(terms.names - words) + sorted(terms.words - words)
    return Support(supported, sorted(set(missing)))


def holds(terms: Terms, numbers: set[str], words: set[str], asked: Terms, share: float) -> tuple[bool, float]:
    """Whether a text of these `numbers` and `words` supports `terms` (not empty), and the share of the terms it
    holds: all numbers and names, every key word shared with the question's terms `asked`, at least `share` of
    the other key words, and at least one term."""
    held = (terms.numbers & numbers) | ((terms.names | terms.words) & words)
    cover = len(held) / len(terms.numbers | terms.names | terms.words)
    if terms.numbers - numbers or terms.names - words or terms.words & (asked.words | asked.names) - words:
        return False, cover
    share_ok = not terms.words or len(terms.words & words) / len(terms.words) >= share
    return share_ok and bool(held), cover
