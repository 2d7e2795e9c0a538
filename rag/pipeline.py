"""The rag and hybrid Answerer: retrieve sources, fence them into the prompt, stream the answer, check its citations.

"Not in the documents" has one form: the Verdict says `refused` and its text is exactly rag.prompt.NOT_FOUND. It is
given when no chunk scores above rag.min_score, when the model says so, and (rag.refuse_unsupported) when the
check finds the model's answer unsupported (rag.attribution); the model's words are then kept in the
Verdict's `draft`. With that check on, the answer is held back until it is complete, so nothing unsupported is
ever shown: each generated token and each citation scoring pass is a Progress event, and the text arrives whole
after them. With the check off the model's words stream as Token events as they come; a refusal still ends as
the fixed form in the Verdict.
"""

from __future__ import annotations

import time
from collections.abc import Generator as Steps
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from models.answer import (
    Answer,
    AnswerEvent,
    Done,
    EventStream,
    Message,
    Progress,
    Source,
    Sources,
    Timings,
    Token,
    Verdict,
    choice_events,
    collect,
    generated,
    sampling_params,
)
from models.config import Config
from models.errors import ModelError, RemoteModelError
from models.generate import Generator, SamplingParams
from rag.attribution import DEFAULT_RULE, SUPPORTED, UNSUPPORTED, Rule, attribute, covers, supporting_sources, verdict
from rag.followup import earlier_questions, standalone_query
from rag.prompt import (
    NOT_FOUND,
    Passage,
    build_messages,
    cited_numbers,
    fit_history,
    fit_passages,
    is_refusal,
    passage_tokens,
)
from rag.question_match import answerable_chance
from rag.retrieve import Retrieval, Retriever

if TYPE_CHECKING:
    import numpy as np


def check(question: str, text: str, sources: list[Source], rule: Rule = DEFAULT_RULE, matched: bool = True) -> Verdict:
    """The citations and support of an answer that is not a refusal: markers naming a retrieved source, each
    sentence's supporting source and span, the sources supporting any sentence, and the answer's verdict
    (unsupported too where the sources do not answer the question at all, `matched` false: rag.question_match)."""
    numbers = {s.number for s in sources}
    cited = [n for n in cited_numbers(text) if n in numbers]
    passages = [(s.number, s.text) for s in sources]
    found = attribute(text, passages, question, NOT_FOUND, rule)
    support = verdict(found, matched)
    return Verdict(
        text, False, cited, supporting_sources(found), support == SUPPORTED, support=support, sentences=found
    )


def refusal(draft: str) -> Verdict:
    """The one fixed "not in the documents" form, keeping the model's words (if any were others) as `draft`."""
    kept = draft if draft and draft != NOT_FOUND else None
    return Verdict(NOT_FOUND, refused=True, cited=[], supports=[], grounded=False, draft=kept)


def settle(
    question: str, text: str, sources: list[Source], held: bool, rule: Rule = DEFAULT_RULE, matched: bool = True
) -> Verdict:
    """After generation: the fixed form when the model refused or (`held`, rag.refuse_unsupported) when the
    check finds the answer unsupported; otherwise the answer with its citations checked. A `partly` answer is
    shown: on the calibration set, refusing it too withheld far more right answers (docs/trust.md)."""
    if is_refusal(text):
        return refusal(text)
    checked = check(question, text, sources, rule, matched)
    return refusal(text) if held and checked.support == UNSUPPORTED else checked


class RagAnswerer:
    """Answers from the retrieved passages; hybrid is this over the adapted model's generator."""

    def __init__(self, config: Config, retriever: Retriever, generator: Generator) -> None:
        self.config, self.retriever, self.generator = config, retriever, generator
        self.rule = Rule(share=config.rag.support_share)

    def events(
        self, question: str, conversation: Sequence[Message] = (), params: SamplingParams | None = None
    ) -> EventStream:
        """The answer to `question` from the documents, after the earlier turns of `conversation`.

        Retrieval reads the question made standalone (rag.followup: "when was he born?" after a question about
        Tesla searches for Tesla), announced as the Sources event's `query`. The prompt holds the retrieved
        passages first, within rag.max_context_tokens, and then as many of the most recent earlier user and
        assistant turns as the rest of that budget holds; the question stays in the user's own words.
        """
        started = time.perf_counter()
        query = yield from self._query(question, conversation)
        passages, sources, vector = yield from self._retrieve(query)
        if not passages:
            # Nothing scored above rag.min_score: say so rather than let the model guess.
            yield Token(NOT_FOUND)
            yield refusal("")
            elapsed = time.perf_counter() - started
            yield Timings({"first_token_s": elapsed, "total_s": elapsed})
            yield Done()
            return
        count = self.generator.count_tokens
        left = self.config.rag.max_context_tokens - passage_tokens(passages, count)
        messages = build_messages(question, passages, fit_history(conversation, max(left, 0), count))
        held = self.config.rag.refuse_unsupported  # held back until the support check has run
        stream = self.generator.stream(messages, params or sampling_params(self.config))
        text = yield from generated(stream, started, shown=not held)
        checking = time.perf_counter()
        matched = is_refusal(text) or self._matched(question, vector, sources)  # after the stream: no wait for a token
        verdict = settle(question, text, sources, held, self.rule, matched)
        citing = time.perf_counter()
        verdict, marker = yield from self._cite(question, passages, sources, verdict, matched)
        yield Timings({"support_s": citing - checking, "cite_s": time.perf_counter() - citing})
        if held:
            yield Timings({"first_token_s": time.perf_counter() - started})
            yield Token(verdict.text)
        elif marker:
            yield Token(marker)
        yield verdict
        yield Timings({"total_s": time.perf_counter() - started})
        yield Done()

    def _query(self, question: str, conversation: Sequence[Message]) -> Steps[AnswerEvent, None, str]:
        """The standalone query for `question` after `conversation` (rag.followup), its time as an event when a
        rewrite was tried."""
        rag = self.config.rag
        if rag.followup == "off" or not earlier_questions(conversation):
            return question
        rewriting = time.perf_counter()
        query = standalone_query(question, conversation, rag.followup, self.generator, rag.followup_max_tokens)
        yield Timings({"rewrite_s": time.perf_counter() - rewriting})
        return query

    def retrieved(self, query: str) -> tuple[list[Passage], list[Source], Retrieval]:
        """The passages that fit rag.max_context_tokens, best first, their sources, and the retrieval they came
        from (its timings and the query's vector): what an answer to `query` is written from and checked on."""
        retrieval = self.retriever.retrieve(query)
        passages = [Passage(s.number, _label(s), s.text) for s in retrieval.sources]
        passages = fit_passages(passages, self.config.rag.max_context_tokens, self.generator.count_tokens)
        return passages, retrieval.sources[: len(passages)], retrieval

    def _retrieve(self, query: str) -> Steps[AnswerEvent, None, tuple[list[Passage], list[Source], np.ndarray | None]]:
        """`retrieved`, its sources and timings announced as events."""
        passages, sources, retrieval = self.retrieved(query)
        yield Sources(sources, retrieval.generation, query)
        yield Timings(dict(retrieval.timings))
        return passages, sources, retrieval.vector

    def _matched(self, question: str, vector: np.ndarray | None, sources: list[Source]) -> bool:
        """Whether the sources answer the question at all: rag.question_match's model (0: not checked)."""
        floor = self.config.rag.question_match
        if floor <= 0:
            return True
        texts = [s.text for s in sources]
        if vector is None:  # no question vector to weigh meanings with: the passages' terms alone
            return covers(question, list(enumerate(texts, 1)))
        return answerable_chance(self.retriever.embedder, vector, question, texts) >= floor

    def _cite(
        self, question: str, passages: list[Passage], sources: list[Source], verdict: Verdict, matched: bool
    ) -> Steps[AnswerEvent, None, tuple[Verdict, str]]:
        """The verdict once the answer cites a source, and the marker appended ("" when none was).

        rag.citation=attribution cites the source that supports most of the answer's sentences (the check has
        found it already); likelihood lets the model choose: its answer is scored after a prompt holding each
        retrieved passage alone, with a Progress event after each pass, and the passage that makes the answer
        likeliest is cited.
        """
        if verdict.refused or not verdict.text.strip():
            return verdict, ""
        if any(n in {p.number for p in passages} for n in cited_numbers(verdict.text)):
            return replace(verdict, citation="written"), ""
        base = verdict.text.rstrip()
        best = passages[0].number
        if self.config.rag.citation == "attribution":
            # The source most of its sentences lean on: its attribution, already computed, costs nothing more.
            best = next(iter(verdict.supports), _likeliest_source(verdict) or best)
        elif len(passages) > 1:
            scores = []
            for passage in passages:
                try:
                    messages = build_messages(question, [passage])
                    scores.append(self.generator.continuation_logprobs(messages, [base])[0])
                except RemoteModelError:  # a server that is down is an error to report, not a missing feature
                    raise
                except ModelError:  # an engine without log-probabilities: the answer stays uncited
                    return verdict, ""
                yield Progress("cite")
            best = passages[max(range(len(passages)), key=scores.__getitem__)].number
        # The text changed: check it again (the same text would give the same figures).
        checked = check(question, f"{base} [{best}]", sources, self.rule, matched)
        return replace(checked, citation="chosen"), f" [{best}]"

    def choose(self, question: str, choices: tuple[str, ...]) -> Answer:
        """The likeliest of `choices` as the start of the reply to the same grounded prompt `events` builds.

        With nothing retrieved above rag.min_score, the choices are scored after an empty context: a closed
        set has no "not in the documents" answer to give.
        """

        def events() -> Iterator[AnswerEvent]:
            started = time.perf_counter()
            passages, _, _ = yield from self._retrieve(question)
            yield from choice_events(self.generator, build_messages(question, passages), choices, started)

        return collect(question, events())


def _likeliest_source(verdict: Verdict) -> int | None:
    """With no source supporting a sentence: the one holding most of the answer's first sentences' terms."""
    return next((a.source for a in verdict.sentences if a.source is not None), None)


def _label(source: Source) -> str:
    name = Path(source.path).name
    return f"{name} ({source.locator})" if source.locator else name
