"""One way to answer, whatever the mode: the Answerer protocol, the typed events it streams, the Answer built from them.

Every mode (base, finetune, rag, hybrid) is an Answerer: `events(question, conversation)` yields the answer as it
is made, and the CLI, the Python API, the server and compare read the same events. The Answer record is put
together in one place, `AnswerBuilder`, from those events, so no caller fills in a record on the side.

The events, in the order an answer gives them:
    Sources   what was retrieved and the query searched (retrieving modes; before any text)
    Progress  a step with nothing to show yet (a token of an answer held back for its support check, a
              citation scoring pass): a chance for a server to notice a client that hung up
    Token     text to show, in order
    Verdict   the checked answer: its final text (the one fixed refusal, or with the chosen [n] appended),
              what it cites and what supports it (retrieving modes; after the text)
    Timings   seconds per stage and the generator's token usage
    Done      the end; nothing follows
"""

from __future__ import annotations

import time
from collections.abc import Generator as Steps
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from models.config import Config
from models.generate import Generator, SamplingParams, TokenStream, Usage

# A chat turn as the OpenAI API and the generators take it: {"role": ..., "content": ...}.
Message = dict[str, str]


@dataclass(frozen=True)
class Source:
    number: int  # 1-based, as the prompt and the answer's [n] markers name it
    path: str
    chunk: int
    locator: str
    score: float  # the last stage's score, the order of the sources (rerank, fused, lexical or dense)
    text: str
    # Each stage's score, e.g. {"dense": 0.61, "lexical": 7.2, "fused": 0.016, "rerank": 0.93}; "dense"
    # (the index.space similarity) is the one rag.min_score applies to, present for every retriever.
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Attribution:
    """One answer sentence and what supports it (rag/attribution.py)."""

    start: int  # the sentence's span in the answer's text
    end: int
    support: str  # "supported", "partly" or "unsupported"
    source: int | None = None  # the number of the source that supports it best (None: no source holds any of it)
    span: tuple[int, int] | None = None  # where in that source's text the support stands


@dataclass(frozen=True)
class Sources:
    sources: list[Source]
    generation: str | None  # the index generation searched
    # The text retrieval searched with: the question, or a follow-up made standalone (rag.followup).
    query: str | None = None


@dataclass(frozen=True)
class Progress:
    stage: str  # "generate" or "cite"


@dataclass(frozen=True)
class Token:
    text: str


@dataclass(frozen=True)
class Verdict:
    text: str  # the answer as it stands after the checks
    refused: bool
    cited: list[int]  # source numbers the answer cites as [n]
    supports: list[int]  # source numbers whose text supports the answer
    grounded: bool  # every sentence of the answer is supported by a retrieved source
    # Who put the citation there: "written" (the model's own [n]) or "chosen" (appended); None: it cites nothing.
    citation: str | None = None
    draft: str | None = None  # the model's own words when the refusal replaced them
    # The answer as a whole: "supported" (every sentence), "partly", "unsupported"; None for a refusal.
    support: str | None = None
    sentences: list[Attribution] = field(default_factory=list)  # of the text as it stands


@dataclass(frozen=True)
class Timings:
    seconds: dict[str, float]
    usage: Usage | None = None
    # Closed-set questions answered by likelihood (`choose`): each choice's total log-probability.
    choice_logprobs: dict[str, float] | None = None


@dataclass(frozen=True)
class Done:
    pass


AnswerEvent = Sources | Progress | Token | Verdict | Timings | Done
# What `Answerer.events` returns: closing it early stops generation.
EventStream = Steps[AnswerEvent, None, None]


@dataclass
class Answer:
    question: str
    text: str = ""
    sources: list[Source] = field(default_factory=list)
    cited: list[int] = field(default_factory=list)
    supports: list[int] = field(default_factory=list)
    citation: str | None = None
    grounded: bool = False
    refused: bool = False
    draft: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    usage: Usage | None = None
    generation: str | None = None
    choice_logprobs: dict[str, float] | None = None
    support: str | None = None
    sentences: list[Attribution] = field(default_factory=list)
    query: str | None = None  # what retrieval searched with (retrieving modes); None: nothing was retrieved

    def sentences_json(self) -> list[dict[str, Any]]:
        """Each sentence's attribution with its text: what `ask --json`, the API and eval's answers carry."""
        return [{**asdict(s), "text": self.text[s.start : s.end]} for s in self.sentences]

    def to_json(self) -> dict[str, Any]:
        """The `ask --json` shape: `answer` is the text; each source says whether the answer cites it and
        whether it supports the answer."""
        data = asdict(self)
        data = {"question": data.pop("question"), "answer": data.pop("text"), **data}
        if self.choice_logprobs is None:
            del data["choice_logprobs"]
        for source in data["sources"]:
            source["cited"] = source["number"] in self.cited
            source["supports"] = source["number"] in self.supports
        data["sentences"] = self.sentences_json()
        data["usage"] = (
            None
            if self.usage is None
            else {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
                "finish_reason": self.usage.finish_reason,
            }
        )
        return data


class AnswerBuilder:
    """The Answer that a stream of events describes: feed it every event in order, read `answer`."""

    def __init__(self, question: str) -> None:
        self.answer = Answer(question)
        self.done = False

    def add(self, event: AnswerEvent) -> AnswerEvent:
        answer = self.answer
        if isinstance(event, Sources):
            answer.sources, answer.generation, answer.query = list(event.sources), event.generation, event.query
        elif isinstance(event, Token):
            answer.text += event.text
        elif isinstance(event, Verdict):
            answer.text, answer.refused, answer.cited, answer.supports = (
                event.text, event.refused, list(event.cited), list(event.supports)
            )  # fmt: skip
            answer.grounded, answer.citation, answer.draft = event.grounded, event.citation, event.draft
            answer.support, answer.sentences = event.support, list(event.sentences)
        elif isinstance(event, Timings):
            answer.timings.update(event.seconds)
            answer.usage = event.usage if event.usage is not None else answer.usage
            answer.choice_logprobs = event.choice_logprobs or answer.choice_logprobs
        elif isinstance(event, Done):
            answer.text = answer.text.strip()
            self.done = True
        return event


def collect(question: str, events: Iterable[AnswerEvent]) -> Answer:
    """Drain `events` into the Answer they describe."""
    builder = AnswerBuilder(question)
    for event in events:
        builder.add(event)
    return builder.answer


def text_of(events: Iterable[AnswerEvent]) -> Iterator[str]:
    """Only the text to show, piece by piece, as it comes."""
    for event in events:
        if isinstance(event, Token) and event.text:
            yield event.text


class Answerer(Protocol):
    """Answers questions in one mode; the same protocol for base, finetune, rag and hybrid."""

    config: Config
    generator: Generator

    def events(
        self, question: str, conversation: Sequence[Message] = (), params: SamplingParams | None = None
    ) -> EventStream:
        """The answer to `question`, after the earlier turns of `conversation`, as typed events ending in Done.
        Closing the stream early stops generation."""
        ...

    def choose(self, question: str, choices: tuple[str, ...]) -> Answer:
        """The likeliest of `choices` as the start of the reply (closed-set questions scored by likelihood)."""
        ...


def answer(answerer: Answerer, question: str, conversation: Sequence[Message] = ()) -> Answer:
    """`answerer`'s whole Answer to `question`."""
    return collect(question, answerer.events(question, conversation))


def sampling_params(config: Config) -> SamplingParams:
    llm = config.llm
    return SamplingParams(
        max_new_tokens=llm.max_new_tokens, temperature=llm.temperature, top_p=llm.top_p, seed=llm.seed
    )


def generated(stream: TokenStream, started: float, shown: bool = True) -> Steps[AnswerEvent, None, str]:
    """A generator's token stream as events: Token per piece (Progress instead while `shown` is false: the text
    is held back), then the generation's Timings measured from `started`. Returns the whole text, stripped."""
    pieces: list[str] = []
    first: float | None = None
    for piece in stream:
        if first is None:
            first = time.perf_counter() - started
        pieces.append(piece)
        yield Token(piece) if shown else Progress("generate")
    now = time.perf_counter() - started
    usage = stream.usage
    seconds = {"first_token_s": first if first is not None else now, "generate_s": usage.total_s}
    yield Timings({**seconds, "tokens_per_s": usage.tokens_per_s, "total_s": now}, usage)
    return "".join(pieces).strip()


def choice_events(
    generator: Generator, messages: list[Message], choices: tuple[str, ...], started: float
) -> Iterator[AnswerEvent]:
    """Score each choice's log-probability after `messages`; the likeliest is the answer's text."""
    scores = dict(zip(choices, generator.continuation_logprobs(messages, list(choices))))
    yield Token(max(choices, key=scores.__getitem__))
    elapsed = time.perf_counter() - started
    yield Timings({"first_token_s": elapsed, "total_s": elapsed}, choice_logprobs=scores)
    yield Done()
