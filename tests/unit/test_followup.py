"""Follow-up questions made standalone for retrieval: the rules, the LM rewriter and its fallback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from models.errors import ModelError
from models.generate import SamplingParams, Usage
from rag.followup import cleaned, earlier_questions, lm_rewrite, names, rules_rewrite, standalone_query


def turns(*texts: str) -> list[dict[str, str]]:
    """User and assistant turns alternating, starting with the user."""
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)]


class Reply:
    def __init__(self, text: str, finish_reason: str = "stop") -> None:
        self.text, self.usage = text, Usage(finish_reason=finish_reason)

    def __iter__(self) -> Iterator[str]:
        yield self.text


class Scripted:
    """A generator that writes one fixed reply (or raises), and keeps the prompts and settings it was given."""

    name = "scripted"

    def __init__(self, reply: str = "", finish_reason: str = "stop", error: Exception | None = None) -> None:
        self.reply, self.finish_reason, self.error, self.calls = reply, finish_reason, error, []

    def stream(self, messages: list[dict[str, str]], params: SamplingParams) -> Reply:
        self.calls.append((messages, params))
        if self.error is not None:
            raise self.error
        return Reply(self.reply, self.finish_reason)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


TESLA = turns("In what year did Tesla receive a Nobel Prize bid?", "In 1915.")


@pytest.mark.parametrize(
    ("earlier", "follow_up", "expected"),
    [
        (TESLA, "When was he born?", "When was he born? (Tesla, Nobel Prize)"),
        (turns("How many tons of carbon does the Amazon absorb?", "1.1 billion"), "How big is its basin?",
         "How big is its basin? (Amazon)"),
        (turns("What is the capital of Kenya?", "Nairobi."), "And the population?", "And the population? (Kenya)"),
        (turns("Who founded Newcastle University?", "..."), "What river is it on?",
         "What river is it on? (Newcastle University)"),
        (turns("Where did the Normans settle?", "Normandy."), "Who did they team up with in Anatolia?",
         "Who did they team up with in Anatolia? (Normans)"),
        # A question that names its own subject and is not short is a new topic: left as it is.
        (TESLA, "What is the capital city of France?", "What is the capital city of France?"),
        # The names come from the most recent earlier question holding any.
        ([*TESLA, *turns("When was he born?", "1856.")], "Where did he die?",
         "Where did he die? (Tesla, Nobel Prize)"),
        # No name earlier: the earlier question's key words are added.
        (turns("how long can i borrow a dvd?", "Seven days."), "Can this be extended?",
         "Can this be extended? (borrow dvd)"),
    ],
)  # fmt: skip
def test_rules_add_the_earlier_names_to_the_follow_up(earlier, follow_up: str, expected: str) -> None:
    assert rules_rewrite(follow_up, earlier) == expected


def test_with_no_earlier_user_turn_the_question_is_unchanged_and_no_model_is_called() -> None:
    generator = Scripted("Something else entirely?")
    system = [{"role": "system", "content": "Be brief, Tesla fan."}]
    for conversation in ([], system, [{"role": "assistant", "content": "Hello, ask me about Tesla."}]):
        assert earlier_questions(conversation) == []
        assert rules_rewrite("When was he born?", conversation) == "When was he born?"
        for way in ("lm", "rules", "off"):
            assert standalone_query("When was he born?", conversation, way, generator, 48) == "When was he born?"
    assert generator.calls == []


def test_off_leaves_a_follow_up_as_written() -> None:
    assert standalone_query("When was he born?", TESLA, "off", Scripted("x"), 48) == "When was he born?"


def test_names_skip_question_words() -> None:
    assert names("Who did the sign language of the National Anthem at Super Bowl 50?") == [
        "National Anthem",
        "Super Bowl 50",
    ]
    assert names("What Goldman Sachs CEO is also an alumni of the University of Chicago?") == [
        "Goldman Sachs CEO",
        "University of Chicago",
    ]


def test_the_lm_rewrite_is_used_greedy_and_bounded() -> None:
    generator = Scripted('Rewritten question: "When was Nikola Tesla born?"\nHe was born in 1856.')
    assert lm_rewrite("When was he born?", TESLA, generator, 48) == "When was Nikola Tesla born?"
    (messages, params), = generator.calls  # fmt: skip
    assert params.max_new_tokens == 48 and params.temperature == 0.0
    prompt = messages[-1]["content"]
    assert "Tesla receive a Nobel Prize" in prompt and "In 1915." in prompt and "When was he born?" in prompt


@pytest.mark.parametrize(
    "generator",
    [
        Scripted(error=ModelError("the prompt is over llm.context_window")),
        Scripted(""),  # nothing said
        Scripted("   \n  "),
        Scripted("When was Tesla born " + "and why " * 60),  # an answer or an essay, not a question
        Scripted("When was Nikola Tesla born and", finish_reason="length"),  # cut off at followup_max_tokens
        Scripted("In what year did Tesla receive a Nobel Prize bid?"),  # the earlier question copied back
    ],
)
def test_the_lm_falls_back_to_the_rules(generator: Scripted) -> None:
    assert lm_rewrite("When was he born?", TESLA, generator, 48) == rules_rewrite("When was he born?", TESLA)
    assert len(generator.calls) == 1


def test_cleaned_takes_the_first_line_without_labels() -> None:
    assert cleaned("Standalone question: Who won it?\nThe Broncos.", "Who won?") == "Who won it?"
    assert cleaned("", "Who won?") is None


def test_the_answer_prompt_keeps_the_most_recent_turns_that_fit() -> None:
    from rag.prompt import TURN_OVERHEAD, Passage, build_messages, fit_history

    history = [{"role": "system", "content": "Be brief."}, *turns("one two", "three four five", "six", "seven eight")]
    count = Scripted().count_tokens
    assert fit_history(history, 1000, count) == history[1:]  # a client's system turn is not an earlier turn
    two = (1 + TURN_OVERHEAD) + (2 + TURN_OVERHEAD)
    assert fit_history(history, two, count) == history[-2:]
    assert fit_history(history, two - 1, count) == history[-1:]
    assert fit_history(history, 0, count) == []
    messages = build_messages("Why?", [Passage(1, "a.txt", "text")], history)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"] != "Be brief." and messages[-1]["content"].endswith("Question: Why?")
