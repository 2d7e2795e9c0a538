"""One suite for every answer mode (models/modes.py): each is an Answerer streaming the same typed events.

A new mode passes by being added to MODES: the event order, the Answer built from the events, early closing,
choices scored by likelihood and the conversation turns are then required of it, on the tiny LM.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from finetune.train import train
from models.answer import Answer, Done, Progress, Sources, Timings, Token, Verdict, answer, collect, text_of
from models.config import load_config
from models.modes import MODES, answer_mode
from rag.ingest import ingest
from ragtune.compose import build_answerer

QUESTION = "How long can I borrow a DVD?"
ADAPTER = "contract"


@pytest.fixture(scope="module")
def adapter_home(tmp_path_factory: pytest.TempPathFactory, tiny_lm_path: Path) -> Path:
    """One RAGTUNE_HOME holding a tiny adapter, trained once for the adapted modes."""
    home = tmp_path_factory.mktemp("answerer-home")
    pairs = [(QUESTION, "Seven days."), ("When does the library open?", "At nine.")] * 2
    data = home / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": q, "completion": a}) + "\n" for q, a in pairs))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAGTUNE_HOME", str(home))
        overrides = [f"llm.model={tiny_lm_path}", "llm.dtype=float32", "llm.device=cpu"]
        training = ["finetune.max_steps=2", "finetune.batch_size=2", "finetune.eval_fraction=0"]
        train(load_config(None, overrides + training), data, ADAPTER, progress=False)
    return home


@pytest.fixture(params=list(MODES))
def answerer(request, adapter_home: Path, ragtune_home: Path, tiny_config, embedder, docs: Path):
    shutil.copytree(adapter_home / "adapters", ragtune_home / "adapters")
    mode = answer_mode(request.param)
    config = replace(tiny_config, mode=mode.name)
    if mode.adapted:
        config = replace(config, finetune=replace(config.finetune, adapter=ADAPTER))
    if mode.retrieves:
        ingest([docs], config, embedder, progress=False)
    return mode, build_answerer(config, embedder=embedder, progress=False)


def test_every_mode_streams_events_in_order_and_ends_with_done(answerer) -> None:
    mode, subject = answerer
    events = list(subject.events(QUESTION))
    kinds = [type(e) for e in events]
    assert kinds[-1] is Done and kinds.count(Done) == 1
    assert set(kinds) <= {Sources, Progress, Token, Verdict, Timings, Done}
    assert (Sources in kinds) == mode.retrieves  # retrieval is announced before any text
    assert (Verdict in kinds) == mode.retrieves  # the checks follow the text
    if mode.retrieves:
        assert kinds.index(Sources) < min(i for i, k in enumerate(kinds) if k in (Token, Verdict))
        assert max(i for i, k in enumerate(kinds) if k is Token) < kinds.index(Verdict)
    assert any(k is Timings for k in kinds)


def test_the_answer_is_what_the_events_say(answerer) -> None:
    mode, subject = answerer
    events = list(subject.events(QUESTION))
    built = collect(QUESTION, events)
    assert isinstance(built, Answer) and built.question == QUESTION
    shown = "".join(e.text for e in events if isinstance(e, Token)).strip()
    verdicts = [e for e in events if isinstance(e, Verdict)]
    assert built.text == (verdicts[-1].text if verdicts else shown)
    assert built.usage is None or built.usage.completion_tokens >= 0
    assert {"first_token_s", "total_s"} <= set(built.timings)
    if mode.retrieves:
        sources = next(e for e in events if isinstance(e, Sources))
        assert built.sources == sources.sources and built.generation == sources.generation
        assert set(built.cited) <= {s.number for s in built.sources}
    else:
        assert built.sources == [] and built.text == shown and built.usage is not None
    # The same answer through the one-call helpers every consumer uses.
    assert answer(subject, QUESTION).text == built.text
    assert "".join(text_of(subject.events(QUESTION))).strip() == built.text


def test_closing_the_stream_early_stops_the_answer(answerer) -> None:
    _, subject = answerer
    stream = subject.events(QUESTION)
    first = next(stream)
    assert not isinstance(first, Done)
    stream.close()
    with pytest.raises(StopIteration):
        next(stream)


def test_choices_are_scored_by_likelihood(answerer) -> None:
    mode, subject = answerer
    chosen = subject.choose("Are DVDs lent for 7 days?", ("yes", "no"))
    assert set(chosen.choice_logprobs) == {"yes", "no"}
    assert chosen.text == max(chosen.choice_logprobs, key=chosen.choice_logprobs.get)
    assert bool(chosen.sources) == mode.retrieves


def test_an_earlier_turn_is_accepted_by_every_mode(answerer) -> None:
    mode, subject = answerer
    earlier = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi, how can I help?"}]
    events = list(subject.events(QUESTION, earlier))
    assert isinstance(events[-1], Done)
    if not mode.retrieves:  # the LM alone reads the turns: its prompt is longer than the question's alone
        alone = collect(QUESTION, subject.events(QUESTION)).usage
        assert collect(QUESTION, events).usage.prompt_tokens > alone.prompt_tokens


def test_a_retrieving_answer_records_its_query(answerer) -> None:
    mode, subject = answerer
    built = collect(QUESTION, subject.events(QUESTION))
    assert built.query == (QUESTION if mode.retrieves else None)
    assert built.to_json()["query"] == built.query


class Recording:
    """Passes every call through, keeping what retrieval searched with and the prompts the model was given."""

    def __init__(self, inner) -> None:
        self.inner, self.queries, self.prompts = inner, [], []
        self.name = getattr(inner, "name", "recording")
        self.embedder = getattr(inner, "embedder", None)

    def retrieve(self, question: str):
        self.queries.append(question)
        return self.inner.retrieve(question)

    def stream(self, messages, params):
        self.prompts.append(messages)
        return self.inner.stream(messages, params)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def continuation_logprobs(self, messages, continuations):
        return self.inner.continuation_logprobs(messages, continuations)


FOLLOW_UP = "Can it be renewed?"
EARLIER = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": QUESTION},
    {"role": "assistant", "content": "Seven days."},
]


@pytest.fixture
def rag_parts(ragtune_home: Path, tiny_config, embedder, docs: Path):
    """A rag answerer over the example documents with its retriever and generator recorded, for rag.followup=X."""
    from rag.pipeline import RagAnswerer

    ingest([docs], replace(tiny_config, mode="rag"), embedder, progress=False)

    def build(**rag):
        config = replace(tiny_config, mode="rag", rag=replace(tiny_config.rag, **rag))
        built = build_answerer(config, embedder=embedder, progress=False)
        retriever, generator = Recording(built.retriever), Recording(built.generator)
        return RagAnswerer(config, retriever, generator), retriever, generator

    return build


def test_a_follow_up_is_retrieved_as_a_standalone_question(rag_parts) -> None:
    subject, retriever, _ = rag_parts(followup="rules")
    events = list(subject.events(FOLLOW_UP, EARLIER))
    built = collect(FOLLOW_UP, events)
    assert retriever.queries == ["Can it be renewed? (DVD)"]  # the earlier question's names added
    assert built.query == "Can it be renewed? (DVD)" and built.question == FOLLOW_UP
    assert next(e for e in events if isinstance(e, Sources)).query == built.query
    assert built.to_json()["query"] == built.query and "rewrite_s" in built.timings
    off, retriever, _ = rag_parts(followup="off")
    assert collect(FOLLOW_UP, off.events(FOLLOW_UP, EARLIER)).query == FOLLOW_UP == retriever.queries[0]


def test_the_lm_rewrites_a_follow_up_with_the_answering_model(rag_parts) -> None:
    subject, retriever, generator = rag_parts(followup="lm", followup_max_tokens=6)
    built = collect(FOLLOW_UP, subject.events(FOLLOW_UP, EARLIER))
    # The tiny random LM writes junk or is cut off: whatever it gives, retrieval gets one non-empty line.
    assert len(generator.prompts) == 2  # the rewrite, then the answer
    assert QUESTION in generator.prompts[0][-1]["content"] and FOLLOW_UP in generator.prompts[0][-1]["content"]
    assert retriever.queries == [built.query] and built.query.strip() and "\n" not in built.query
    # With no earlier user turn the model is not asked to rewrite.
    subject, retriever, generator = rag_parts(followup="lm")
    assert collect(QUESTION, subject.events(QUESTION, EARLIER[:1])).query == QUESTION
    assert len(generator.prompts) == 1 and retriever.queries == [QUESTION]


def test_the_prompt_holds_the_earlier_turns_before_the_grounded_question(rag_parts) -> None:
    subject, _, generator = rag_parts(followup="rules")
    collect(FOLLOW_UP, subject.events(FOLLOW_UP, EARLIER))
    (messages,) = generator.prompts
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"] != "Be brief."  # a client's system turn does not replace the grounding rules
    assert messages[1]["content"] == QUESTION and messages[2]["content"] == "Seven days."
    assert "<context>" in messages[3]["content"] and messages[3]["content"].endswith(f"Question: {FOLLOW_UP}")


def test_earlier_turns_get_what_the_passages_leave_of_the_budget(rag_parts) -> None:
    from rag.prompt import PASSAGE_OVERHEAD, TURN_OVERHEAD

    long_turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"Turn {i}: " + "borrow a DVD " * 30}
        for i in range(12)
    ]
    subject, _, generator = rag_parts(followup="off")
    count = generator.count_tokens
    sources = collect(FOLLOW_UP, subject.events(FOLLOW_UP)).sources
    passages = sum(count(s.text) + PASSAGE_OVERHEAD for s in sources)
    turn = count(long_turns[-1]["content"]) + TURN_OVERHEAD
    # Room for every retrieved passage and two and a half of the (equally long) turns.
    budget = passages + turn * 5 // 2
    subject, _, generator = rag_parts(followup="off", max_context_tokens=budget)
    built = collect(FOLLOW_UP, subject.events(FOLLOW_UP, long_turns))
    (messages,) = generator.prompts
    assert built.sources == sources  # the passages keep priority: all still fit
    kept = messages[1:-1]
    assert kept == long_turns[-2:]  # the two most recent turns, in order; the older ones are dropped
    assert passages + sum(count(m["content"]) + TURN_OVERHEAD for m in kept) <= budget
