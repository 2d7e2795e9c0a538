"""Answer a question: retrieve sources, fence them into the prompt, stream the answer, check its citations.

"Not in the documents" has one form: `refused` is true and the text is exactly rag.prompt.NOT_FOUND. It is
given when no chunk scores above rag.min_score, when the model says so, and (rag.refuse_unsupported) when
the retrieved text does not support the model's answer (rag.grounding); the model's words are then kept
in `draft`. With that check on, the answer is held back until it is complete, so nothing unsupported is
ever shown: the text arrives in the last piece, and each step before it (a generated token, a citation
scoring pass) yields an empty piece, so a server can notice a client that hung up and close the stream,
which stops generation. Callers skip empty pieces. With the check off the model's words stream as they
come; a refusal still ends as the fixed form in the Answer.
"""

from __future__ import annotations

import time
from collections.abc import Generator as Steps
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.config import Config
from models.errors import ModelError, RemoteModelError
from models.generate import Generator, SamplingParams, TokenStream, Usage
from rag.grounding import check_support
from rag.prompt import NOT_FOUND, Passage, build_messages, cited_numbers, fit_passages, is_refusal
from rag.retrieve import Retriever, Source


@dataclass
class Answer:
    question: str
    text: str = ""
    sources: list[Source] = field(default_factory=list)
    # Source numbers the answer cites as [n], and those whose text supports it (rag.grounding).
    cited: list[int] = field(default_factory=list)
    supports: list[int] = field(default_factory=list)
    # Who put the citation there: "written" (the model's own [n]) or "chosen" (the model wrote none, and the
    # marker of the retrieved source it found likeliest to cite was appended); None: the answer cites nothing.
    citation: str | None = None
    # The answer's content is found in the retrieved text taken together.
    grounded: bool = False
    refused: bool = False
    # The model's own answer when it was replaced by the refusal because nothing retrieved supports it.
    draft: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    usage: Usage | None = None
    generation: str | None = None
    # Closed-set questions answered by likelihood (`choose`): each choice's total log-probability.
    choice_logprobs: dict[str, float] | None = None

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


def check_answer(answer: Answer) -> None:
    """Fill in `cited` (markers naming a retrieved source), `supports` and `grounded` from the answer's text."""
    numbers = {s.number for s in answer.sources}
    answer.cited = [n for n in cited_numbers(answer.text) if n in numbers]
    if answer.refused:
        answer.supports, answer.grounded = [], False
        return
    answer.supports = [
        s.number for s in answer.sources if check_support(answer.text, s.text, answer.question, NOT_FOUND).supported
    ]
    together = "\n".join(s.text for s in answer.sources)
    answer.grounded = check_support(answer.text, together, answer.question, NOT_FOUND).supported


def refuse(answer: Answer) -> None:
    """Replace the answer by the one fixed "not in the documents" form, keeping the model's words in `draft`."""
    if answer.text != NOT_FOUND:
        answer.draft = answer.text or None
    answer.text, answer.refused, answer.citation = NOT_FOUND, True, None
    answer.cited, answer.supports, answer.grounded = [], [], False


def settle(answer: Answer, held: bool) -> None:
    """After generation: check the answer, and give the one fixed form when the model refused or (`held`,
    rag.refuse_unsupported) when nothing retrieved supports it. Before citing: a refusal cites nothing."""
    answer.refused = is_refusal(answer.text)
    check_answer(answer)
    if answer.refused or (held and not answer.grounded):
        refuse(answer)


def sampling_params(config: Config) -> SamplingParams:
    llm = config.llm
    return SamplingParams(
        max_new_tokens=llm.max_new_tokens, temperature=llm.temperature, top_p=llm.top_p, seed=llm.seed
    )


class RagPipeline:
    def __init__(self, config: Config, retriever: Retriever, generator: Generator) -> None:
        self.config, self.retriever, self.generator = config, retriever, generator

    def stream(
        self, question: str, answer: Answer | None = None, params: SamplingParams | None = None
    ) -> Iterator[str]:
        """Yield the answer's text as it is generated; `answer` is filled in as a side record."""
        answer = answer if answer is not None else Answer(question)
        started = time.perf_counter()
        passages = self._retrieve(question, answer)
        if not passages:
            # Nothing scored above rag.min_score: say so rather than let the model guess.
            answer.text, answer.refused = NOT_FOUND, True
            answer.timings["first_token_s"] = answer.timings["total_s"] = time.perf_counter() - started
            yield NOT_FOUND
            return
        messages = build_messages(question, passages)
        stream = self.generator.stream(messages, params or sampling_params(self.config))
        held = self.config.rag.refuse_unsupported  # held back until the support check has run
        for piece in record_stream(stream, answer, started):
            yield "" if held else piece  # held: an empty piece per token keeps a hang-up noticeable
        settle(answer, held)
        marker = yield from self._cite(question, passages, answer)
        if marker:  # the text changed: check it again (the same text would give the same figures)
            check_answer(answer)
        if held:
            answer.timings["first_token_s"] = time.perf_counter() - started
            yield answer.text
        elif marker:
            yield marker
        answer.timings["total_s"] = time.perf_counter() - started

    def _retrieve(self, question: str, answer: Answer) -> list[Passage]:
        """The passages that fit rag.max_context_tokens, best first; `answer` records their sources."""
        retrieval = self.retriever.retrieve(question)
        answer.generation = retrieval.generation
        answer.timings.update(retrieval.timings)
        passages = [Passage(s.number, _label(s), s.text) for s in retrieval.sources]
        passages = fit_passages(passages, self.config.rag.max_context_tokens, self.generator.count_tokens)
        answer.sources = retrieval.sources[: len(passages)]
        return passages

    def _cite(self, question: str, passages: list[Passage], answer: Answer) -> Steps[str, None, str]:
        """Return the marker appended when the model cited no retrieved source itself ("" when none is),
        yielding an empty piece after each scoring pass.

        The model still chooses: its answer is scored after a prompt holding each retrieved passage alone,
        and the passage that makes the answer likeliest is cited (attribution by the model's likelihood, not
        by the support check, which stays an independent measure of the citation).
        """
        if answer.refused or not answer.text.strip():
            return ""
        if any(n in {p.number for p in passages} for n in cited_numbers(answer.text)):
            answer.citation = "written"
            return ""
        base = answer.text.rstrip()
        best = passages[0].number
        if len(passages) > 1:
            scores = []
            for passage in passages:
                try:
                    messages = build_messages(question, [passage])
                    scores.append(self.generator.continuation_logprobs(messages, [base])[0])
                except RemoteModelError:  # a server that is down is an error to report, not a missing feature
                    raise
                except ModelError:  # an engine without log-probabilities: the answer stays uncited
                    return ""
                yield ""
            best = passages[max(range(len(passages)), key=scores.__getitem__)].number
        answer.text, answer.citation = f"{base} [{best}]", "chosen"
        return f" [{best}]"

    def choose(self, question: str, choices: tuple[str, ...]) -> Answer:
        """The likeliest of `choices` as the start of the reply to the same grounded prompt `stream` builds.

        With nothing retrieved above rag.min_score, the choices are scored after an empty context: a closed
        set has no "not in the documents" answer to give.
        """
        answer = Answer(question)
        started = time.perf_counter()
        passages = self._retrieve(question, answer)
        return pick_choice(self.generator, build_messages(question, passages), choices, answer, started)

    def answer(self, question: str) -> Answer:
        result = Answer(question)
        for _ in self.stream(question, result):
            pass
        return result


def pick_choice(
    generator: Generator, messages: list[dict[str, str]], choices: tuple[str, ...], answer: Answer, started: float
) -> Answer:
    """Score each choice's log-probability after `messages`; the likeliest becomes the answer's text."""
    scores = generator.continuation_logprobs(messages, list(choices))
    answer.choice_logprobs = dict(zip(choices, scores))
    answer.text = max(choices, key=answer.choice_logprobs.__getitem__)
    answer.timings["first_token_s"] = answer.timings["total_s"] = time.perf_counter() - started
    return answer


def record_stream(stream: TokenStream, answer: Answer, started: float) -> Iterator[str]:
    """Pass a token stream through, recording its text, usage and timings (from `started`) in `answer`."""
    pieces = []
    for piece in stream:
        if not pieces:
            answer.timings["first_token_s"] = time.perf_counter() - started
        pieces.append(piece)
        yield piece
    answer.timings.setdefault("first_token_s", time.perf_counter() - started)  # an empty answer
    answer.text = "".join(pieces).strip()
    answer.usage = stream.usage
    answer.timings["generate_s"] = stream.usage.total_s
    answer.timings["tokens_per_s"] = stream.usage.tokens_per_s
    answer.timings["total_s"] = time.perf_counter() - started


def _label(source: Source) -> str:
    name = Path(source.path).name
    return f"{name} ({source.locator})" if source.locator else name
