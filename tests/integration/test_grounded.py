"""Checked answers on the tiny LM: citations, support, the fixed refusal, likelihood choices, ask --json."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from models.answer import Progress, Token, collect
from models.engines.openai import OpenAILM
from models.engines.openai_http import RemoteServer
from models.errors import RemoteModelError
from rag.ingest import ingest
from rag.pipeline import RagAnswerer, settle
from rag.prompt import NOT_FOUND, build_messages
from ragtune.cli import main
from ragtune.compose import build_answerer
from tests.conftest import EXAMPLES
from tests.remote import KEY, ServedRagtune, free_port

QUESTION = "How much does a non-resident library card cost?"


def pipeline_for(config, embedder, docs: Path, refuse: bool, citation: str = "attribution"):
    ingest([docs], config, embedder, progress=False)
    rag = replace(config.rag, refuse_unsupported=refuse, citation=citation)
    return build_answerer(replace(config, rag=rag), embedder=embedder)


def test_an_unsupported_answer_becomes_the_fixed_refusal(docs: Path, tiny_config, embedder) -> None:
    # The tiny LM writes random words: nothing retrieved supports them, so the answer is the refusal.
    pipeline = pipeline_for(tiny_config, embedder, docs, refuse=True)
    events = list(pipeline.events(QUESTION))
    answer = collect(QUESTION, events)
    assert [e.text for e in events if isinstance(e, Token)] == [NOT_FOUND]  # held back whole: nothing shown first
    # ...but each generated token was an event (Progress), so a server can notice a client that left.
    assert sum(isinstance(e, Progress) for e in events) > 1
    assert answer.refused and answer.text == NOT_FOUND and answer.cited == [] and not answer.grounded
    assert answer.draft and answer.draft != NOT_FOUND and answer.sources  # the model's words are kept
    data = answer.to_json()
    assert data["answer"] == NOT_FOUND and data["refused"] is True and "text" not in data
    assert all(s["cited"] is False and s["supports"] is False for s in data["sources"])


def test_an_uncited_answer_gets_the_source_the_model_finds_likeliest(docs: Path, tiny_config, embedder) -> None:
    pipeline = pipeline_for(tiny_config, embedder, docs, refuse=False, citation="likelihood")
    events = list(pipeline.events(QUESTION))
    answer = collect(QUESTION, events)
    streamed = "".join(e.text for e in events if isinstance(e, Token))
    assert not answer.refused and answer.citation == "chosen" and len(answer.cited) == 1
    marker = f"[{answer.cited[0]}]"
    assert answer.text.endswith(" " + marker) and streamed.rstrip().endswith(marker)
    # The cited source is the one alone with which the model finds its own answer likeliest.
    base = answer.text[: -len(marker)].rstrip()
    passages = [_passage(s) for s in answer.sources]
    assert len(passages) > 1  # a real choice was made
    scores = [pipeline.generator.continuation_logprobs(build_messages(QUESTION, [p]), [base])[0] for p in passages]
    assert answer.cited[0] == passages[scores.index(max(scores))].number
    assert answer.supports == [] and answer.grounded is False  # random words support nothing, and say so


def test_an_uncited_answer_gets_the_source_its_sentences_lean_on_without_a_model_call(
    docs: Path, tiny_config, embedder, monkeypatch
) -> None:
    pipeline = pipeline_for(tiny_config, embedder, docs, refuse=False)
    monkeypatch.setattr(pipeline.generator, "continuation_logprobs", None)  # attribution never scores
    passages, sources, _ = returned(pipeline._retrieve(QUESTION))
    text = "A non-resident library card costs $45 per year."
    card = next(s.number for s in sources if "$45" in s.text)
    draft = settle(QUESTION, text, sources, held=False)
    verdict, marker = returned(pipeline._cite(QUESTION, passages, sources, draft, matched=True))
    assert marker == f" [{card}]" and verdict.citation == "chosen" and verdict.cited == [card]
    assert verdict.support == "supported" and verdict.supports[0] == card
    (sentence,) = verdict.sentences
    assert sentence.source == card and "$45" in next(s.text for s in sources if s.number == card)[slice(*sentence.span)]


@pytest.mark.parametrize("held", [True, False])
def test_a_model_refusal_takes_the_one_fixed_form_whether_held_or_not(held: bool) -> None:
    verdict = settle(QUESTION, f"Sorry, {NOT_FOUND.lower()} Ask at the desk.", [], held)
    assert (
        verdict.refused
        and verdict.text == NOT_FOUND
        and verdict.draft == f"Sorry, {NOT_FOUND.lower()} Ask at the desk."
    )


def test_a_remote_server_that_is_down_while_citing_is_an_error(
    docs: Path, tiny_config, embedder, tiny_lm_path: Path, tmp_path: Path
) -> None:
    pipeline = pipeline_for(tiny_config, embedder, docs, refuse=False, citation="likelihood")
    (tmp_path / "key").write_text(KEY)
    down = ServedRagtune(f"http://127.0.0.1:{free_port()}", tmp_path / "key", tmp_path, tiny_lm_path).llm()
    remote = RagAnswerer(pipeline.config, pipeline.retriever, OpenAILM(down, RemoteServer(down), ["base"]).generator())
    passages, sources, _ = returned(pipeline._retrieve(QUESTION))
    assert len(passages) > 1
    draft = settle(QUESTION, "It costs forty dollars.", sources, held=False)  # uncited: which source to cite?
    with pytest.raises(RemoteModelError, match="start the server|is the server up"):
        list(remote._cite(QUESTION, passages, sources, draft, matched=True))  # not left silently uncited


def returned(steps):
    """What a generator returns once run to its end (its events are dropped)."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def _passage(source):
    from rag.pipeline import _label
    from rag.prompt import Passage

    return Passage(source.number, _label(source), source.text)


def test_choose_scores_every_choice_after_the_grounded_prompt(docs: Path, tiny_config, embedder) -> None:
    pipeline = pipeline_for(tiny_config, embedder, docs, refuse=True)
    answer = pipeline.choose("Are DVDs lent for 7 days?", ("yes", "no", "maybe"))
    assert set(answer.choice_logprobs) == {"yes", "no", "maybe"} and answer.sources
    assert answer.text == max(answer.choice_logprobs, key=answer.choice_logprobs.get)
    messages = build_messages("Are DVDs lent for 7 days?", [_passage(s) for s in answer.sources])
    expected = pipeline.generator.continuation_logprobs(messages, ["yes", "no", "maybe"])
    assert list(answer.choice_logprobs.values()) == pytest.approx(expected)


def test_ask_json_names_the_answer_and_checks_each_source(
    docs: Path, tiny_lm_path: Path, capsys: pytest.CaptureFixture
) -> None:
    tiny = ["--set", f"llm.model={tiny_lm_path}", "--set", "llm.max_new_tokens=4"]
    assert main(["ingest", str(docs), *tiny]) == 0
    capsys.readouterr()
    assert main(["ask", "--json", QUESTION, *tiny]) == 0  # the default: shown, with its verdict
    data = json.loads(capsys.readouterr().out)
    assert "text" not in data and data["answer"].endswith(f"[{data['cited'][0]}]") and data["refused"] is False
    assert [s["cited"] for s in data["sources"]] == [s["number"] in data["cited"] for s in data["sources"]]
    assert all(isinstance(s["supports"], bool) for s in data["sources"]) and data["citation"] == "chosen"
    assert data["support"] in ("partly", "unsupported") and "support_s" in data["timings"]
    assert all(data["answer"][s["start"] : s["end"]] == s["text"] for s in data["sentences"])
    assert main(["ask", "--json", QUESTION, *tiny, "--set", "rag.refuse_unsupported=true"]) == 0
    refused = json.loads(capsys.readouterr().out)
    assert refused["refused"] is True and refused["answer"] == NOT_FOUND and refused["draft"]


def test_eval_scores_closed_sets_by_likelihood_or_by_parsing(
    docs: Path, tiny_lm_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    questions = tmp_path / "q.jsonl"
    rows = [
        {"question": "Are DVDs lent for 7 days?", "answers": ["yes"], "choices": ["yes", "no", "maybe"]},
        {"question": "Is the Eastside Branch open on Mondays?", "answers": ["no"], "choices": ["yes", "no", "maybe"]},
    ]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tiny = ["--set", f"llm.model={tiny_lm_path}", "--set", "llm.max_new_tokens=3"]
    assert main(["ingest", str(docs), *tiny]) == 0
    for path in ("rag", "base"):
        capsys.readouterr()
        assert main(["eval", "--questions", str(questions), "--path", path, "-o", str(tmp_path / path), *tiny]) == 0
        results = json.loads((tmp_path / path / "results.json").read_text())
        assert results["metrics"]["closed_set_scoring"] == "loglik" and "choice_accuracy_norm" in results["metrics"]
        answers = [json.loads(line) for line in (tmp_path / path / "answers.jsonl").read_text().splitlines()]
        for a in answers:
            assert a["scoring"] == "loglik" and set(a["choice_logprobs"]) == {"yes", "no", "maybe"}
            assert a["choice"] == max(a["choice_logprobs"], key=a["choice_logprobs"].get) == a["prediction"]
        assert results["metrics"]["choice_accuracy"]["mean"] == sum(a["choice"] in a["answers"] for a in answers) / 2
    capsys.readouterr()
    generate = ["--set", "eval.closed_set=generate"]
    assert main(["eval", "--questions", str(questions), "--path", "base", "--json", *tiny, *generate]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["closed_set_scoring"] == "generate"


def test_eval_scores_unanswerable_questions_as_refusals(
    docs: Path, tiny_lm_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    tiny = ["--set", f"llm.model={tiny_lm_path}", "--set", "llm.max_new_tokens=4"]
    assert main(["ingest", str(docs), *tiny]) == 0
    capsys.readouterr()
    unanswerable = EXAMPLES / "unanswerable.jsonl"
    refuse = ["--set", "rag.refuse_unsupported=true"]
    assert main(["eval", "--questions", str(unanswerable), "--docs", str(docs), "--json", *tiny, *refuse]) == 0
    results = json.loads(capsys.readouterr().out)
    metrics, n = results["metrics"], results["questions"]
    # The tiny LM's random words are never supported, so every unanswerable question is refused.
    assert metrics["refusals"] == n and metrics["refusal_recall"]["mean"] == 1.0 and metrics["refusal_recall"]["n"] == n
    assert metrics["refusal_precision"]["mean"] == 1.0 and metrics["contains"]["mean"] == 1.0
    assert metrics["citation_rate"]["n"] == 0  # no answer was given, so no citation is counted
    # By default the same answers are shown, each flagged as not supported: counted as the check declining them.
    assert main(["eval", "--questions", str(unanswerable), "--docs", str(docs), "--json", *tiny]) == 0
    flagged = json.loads(capsys.readouterr().out)["metrics"]
    assert flagged["refusals"] + flagged["flagged"] == n and flagged["refusal_recall"]["mean"] == 1.0


def test_passages_with_no_sentence_close_to_the_question_make_an_answer_unsupported(
    docs: Path, tiny_config, embedder, monkeypatch
) -> None:
    from rag.question_match import closest_sentence

    pipeline = pipeline_for(tiny_config, embedder, docs, refuse=False)
    _, sources, vector = returned(pipeline._retrieve(QUESTION))
    texts = [s.text for s in sources]
    # The card's price sentence is close to the question; a passage about something else is not.
    assert closest_sentence(embedder, vector, texts) > 0.6
    assert closest_sentence(embedder, vector, ["The book club meets on Thursdays at 19:00."]) < 0.45
    assert closest_sentence(embedder, vector, []) == -1.0
    # The same words found in the sources: supported when a sentence comes close enough, not otherwise.
    text = "A non-resident library card costs $45 per year."
    assert settle(QUESTION, text, sources, held=False).support == "supported"
    assert settle(QUESTION, text, sources, held=False, matched=False).support == "unsupported"
    assert settle(QUESTION, text, sources, held=True, matched=False).refused  # rag.refuse_unsupported withholds it
    # Without a question vector the passages' terms alone decide (rag.attribution.covers).
    assert pipeline._matched(QUESTION, None, sources)
    assert not pipeline._matched("When is the Riverside Branch closed?", None, sources)
    # Through the answerer: a floor no chance reaches flags the answer (shown, not withheld); at 0 the check is
    # off and the sources' sentences are never embedded (retrieval's one encode of the question only).
    calls = []
    encode = embedder.encode
    monkeypatch.setattr(embedder, "encode", lambda texts: calls.append(len(texts)) or encode(texts))
    for floor, encodes in ((1.0, 2), (0.0, 1)):
        calls.clear()
        config = replace(pipeline.config, rag=replace(pipeline.config.rag, question_match=floor))
        answer = collect(QUESTION, RagAnswerer(config, pipeline.retriever, pipeline.generator).events(QUESTION))
        assert len(calls) == encodes and not answer.refused
        if floor:
            assert answer.support == "unsupported" and calls[1] >= len(sources)  # every sentence of the sources
