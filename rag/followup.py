"""A follow-up question made standalone for retrieval: by rules (no model call) or by the answering LM.

"When was he born?" retrieves nothing about the person the conversation is about; the index is searched with
"When was he born? (Nikola Tesla)" (the rules) or "When was Nikola Tesla born?" (the LM) instead. With no earlier
user turn the question is used as it is, and no model is called. rag.followup picks the way (lm, rules or off);
the rules need no model and never fail.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from models.errors import ModelError
from models.generate import Generator, SamplingParams

log = logging.getLogger("ragtune.rag")

# Words that point back at something named earlier: a follow-up holding one is made standalone.
_POINTING = {"he", "him", "his", "she", "her", "it", "its", "they", "them", "their", "this", "that", "these", "those"}
_REFERS = re.compile(r"\b(" + "|".join(sorted(_POINTING)) + r")\b", re.IGNORECASE)
# A follow-up this short ("And in 1990?", "Why?") leans on the earlier question even without a pronoun.
SHORT_WORDS = 4
# Capitalised words starting a question are question words, not names.
_OPENERS = {
    "what", "who", "whom", "whose", "which", "when", "where", "why", "how", "is", "are", "was", "were", "do",
    "does", "did", "can", "could", "in", "on", "at", "for", "from", "to", "of", "by", "the", "a", "an", "and",
    "name", "list", "tell", "give", "according", "after", "before", "during", "since", "as", "if", "i", "about",
}  # fmt: skip
# A name: capitalised words (and numbers) in a row, "of"/"and"/"de" allowed inside ("Super Bowl 50",
# "University of Chicago", "Victoria and Albert Museum").
_NAME = re.compile(r"[A-Z][\w'-]*(?:\s+(?:(?:of|and|de|upon|the)\s+)?(?:[A-Z][\w'-]*|\d+\b))*")

REWRITE_PROMPT = (
    "Rewrite the user's last question so that it can be understood without the conversation: replace words "
    "such as he, she, it, they, its and this with what they refer to. Keep everything else. Reply with the "
    "rewritten question only."
)
# Earlier turns shown to the LM rewriter: the last few, each cut short, so its prompt stays small.
REWRITE_TURNS = 4
REWRITE_TURN_CHARS = 400


def earlier_questions(conversation: Sequence[dict[str, str]]) -> list[str]:
    """The earlier user turns' texts, oldest first (system and assistant turns are not questions)."""
    return [m["content"].strip() for m in conversation if m.get("role") == "user" and m.get("content", "").strip()]


def names(question: str) -> list[str]:
    """The names in a question, in order: runs of capitalised words, question words at its start left out."""
    found = []
    for match in _NAME.finditer(question):
        words = match.group(0).split()
        while words and words[0].lower() in _OPENERS:
            words = words[1:]
        words = [re.sub(r"'s$", "", w.rstrip("?.,;:!")) for w in words]
        name = " ".join(w for w in words if w)
        if name and name.lower() not in _OPENERS and name not in found:
            found.append(name)
    return found


def rules_rewrite(question: str, conversation: Sequence[dict[str, str]]) -> str:
    """The follow-up with the names of the most recent earlier question that has any added after it ("When was
    he born? (Tesla, Nobel Prize)"; the last earlier question's key words when none names anything). Unchanged
    when it refers to nothing and is not short, or when there is no earlier user turn.

    The names are added, not put in for the pronoun: which of several names a pronoun means is a guess, and a
    wrong one ("Obama" for the "it" that meant Kenya) searches for the wrong thing; added, every one is
    searched for (docs/retrieval.md, follow-up questions: measured on the dev split).
    """
    earlier = earlier_questions(conversation)
    if not earlier:
        return question
    if _REFERS.search(question) is None and len(question.split()) > SHORT_WORDS:
        return question  # a question that stands on its own: a new topic
    named = next((found for q in reversed(earlier) if (found := names(q))), None)
    context = ", ".join(named) if named else _key_words(earlier[-1])
    return f"{question} ({context})" if context else question


_STOP = {
    "a", "an", "the", "of", "in", "on", "at", "to", "for", "from", "by", "with", "and", "or", "is", "are", "was",
    "were", "be", "been", "do", "does", "did", "what", "who", "whom", "which", "when", "where", "why", "how",
    "that", "this", "it", "its", "as", "into", "about", "many", "much", "there", "their", "they", "has", "have",
    "long", "can", "could", "will", "would", "should", "i", "me", "my", "you", "your", "we", "our",
}  # fmt: skip


def _key_words(question: str) -> str:
    words = re.findall(r"[\w'-]+", question)
    return " ".join(w for w in words if w.lower() not in _STOP)


def rewrite_messages(question: str, conversation: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The LM rewriter's prompt: the last few earlier turns (each cut short) and the follow-up."""
    turns = [m for m in conversation if m.get("role") in ("user", "assistant")][-REWRITE_TURNS:]
    lines = []
    for turn in turns:
        text = " ".join(turn["content"].split())
        text = text if len(text) <= REWRITE_TURN_CHARS else text[:REWRITE_TURN_CHARS] + "..."
        lines.append(f"{'User' if turn['role'] == 'user' else 'Assistant'}: {text}")
    user = "Conversation:\n" + "\n".join(lines) + f"\n\nLast question: {question.strip()}\n\nRewritten question:"
    return [{"role": "system", "content": REWRITE_PROMPT}, {"role": "user", "content": user}]


def cleaned(reply: str, question: str) -> str | None:
    """The rewritten question from the LM's reply: its first line, labels and quotes removed; None when that is
    empty or far longer than a question (the model went on to answer or explain)."""
    line = next((line.strip() for line in reply.strip().splitlines() if line.strip()), "")
    line = re.sub(r"^(rewritten|standalone|last)?\s*question\s*:\s*", "", line, flags=re.IGNORECASE)
    line = line.strip().strip("\"'`").strip()
    if not line or len(line) > max(200, 3 * len(question)):
        return None
    return line


def lm_rewrite(question: str, conversation: Sequence[dict[str, str]], generator: Generator, max_new_tokens: int) -> str:
    """The follow-up as the LM rewrites it (greedy, at most `max_new_tokens`), or the rules' rewrite when the
    model fails, says nothing usable or is cut off."""
    if not earlier_questions(conversation):
        return question
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=("\n",))
    try:
        stream = generator.stream(rewrite_messages(question, conversation), params)
        reply = "".join(stream)
        usage = getattr(stream, "usage", None)
        cut_off = usage is not None and usage.finish_reason == "length"
    except ModelError as error:  # the answer itself reports a model that cannot run; retrieval goes on
        log.warning("the follow-up was rewritten by rules: the model failed (%s)", error)
        return rules_rewrite(question, conversation)
    rewritten = None if cut_off else cleaned(reply, question)
    asked = {q.lower() for q in earlier_questions(conversation)}
    if rewritten is None or rewritten.lower() in asked:  # nothing usable, or the earlier question copied back
        return rules_rewrite(question, conversation)
    return rewritten


def standalone_query(
    question: str, conversation: Sequence[dict[str, str]], way: str, generator: Generator, max_new_tokens: int
) -> str:
    """The query retrieval reads for `question` after `conversation`, the rag.followup way (lm, rules, off)."""
    if way == "off" or not earlier_questions(conversation):
        return question
    if way == "rules":
        return rules_rewrite(question, conversation)
    return lm_rewrite(question, conversation, generator, max_new_tokens)
