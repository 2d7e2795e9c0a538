"""Conversations kept by the server, over a tiny LM on loopback: their routes, turns streamed and whole, what the
model is sent, a client that leaves mid-answer, the contract's errors and a restart."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.config import load_config
from models.generate import load_language_model
from rag.ingest import ingest
from ragtune.serve.background import running
from ragtune.serve.documents import document_id
from ragtune.serve.engine import Engine
from ragtune.serve.server import assemble

KEY = "conversation-key-" + "c" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}
TURN_FIELDS = {"index", "question", "answer", "model", "query", "sources", "refused", "cited", "support"}
TURN_FIELDS |= {"sentences", "timings", "complete", "created"}
PENGUINS = "The aquarium feeds its penguins fresh herring at noon and again at four in the afternoon."


@pytest.fixture
def serve(tiny_lm_path: Path, embedder) -> Iterator:
    """serve(*overrides) -> (url, engine): the app as `ragtune serve` assembles it, over the test's home."""
    with ExitStack() as servers:

        def start(*overrides: str) -> tuple[str, Engine]:
            settings = ["llm.dtype=float32", "llm.device=cpu", "llm.max_new_tokens=6", "serve.max_tokens_limit=64"]
            config = load_config(None, [f"llm.model={tiny_lm_path}", *settings, *overrides])
            engine = Engine(config, embedder=embedder, lm=load_language_model(config.llm, progress=False))
            return servers.enter_context(running(assemble(engine, KEY))), engine

        yield start


@pytest.fixture
def indexed(docs: Path, embedder) -> Path:
    """The example documents with one more in a subfolder, indexed."""
    (docs / "nested").mkdir()
    (docs / "nested" / "penguins.txt").write_text(PENGUINS)
    ingest([docs], load_config(), embedder, progress=False)
    return docs


def call(method: str, url: str, body: dict[str, Any] | None = None, status: int = 200) -> dict[str, Any]:
    response = httpx.request(method, url, json=body, headers=AUTH, timeout=60)
    assert response.status_code == status, response.text
    return response.json()


def error_of(method: str, url: str, body: dict[str, Any] | None, status: int) -> dict[str, Any]:
    error = call(method, url, body, status)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def streamed(url: str, ident: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The chunks of a streamed turn, after checking that the stream ends with [DONE]."""
    events = []
    with httpx.stream("POST", f"{url}/v1/conversations/{ident}/turns", json=body, headers=AUTH, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


def test_conversations_are_created_listed_read_renamed_and_deleted(serve) -> None:
    url, _ = serve()
    first = call("POST", f"{url}/v1/conversations", {})
    assert first["id"].startswith("conv-") and len(first["id"]) == 5 + 24
    assert first["object"] == "conversation" and first["title"] == "New conversation"
    assert first["model"] is None and first["turn_count"] == 0 and first["created"] == first["updated"] > 0
    second = call("POST", f"{url}/v1/conversations", {"title": "Loans", "model": "rag"})
    assert second["title"] == "Loans" and second["model"] == "rag"
    listed = call("GET", f"{url}/v1/conversations")
    assert listed["object"] == "list" and [c["id"] for c in listed["data"]] == [second["id"], first["id"]]
    renamed = call("PATCH", f"{url}/v1/conversations/{first['id']}", {"title": "Opening hours"})
    assert renamed["title"] == "Opening hours" and renamed["id"] == first["id"]
    # Renaming counts as an update: the renamed conversation is now the most recent.
    assert [c["id"] for c in call("GET", f"{url}/v1/conversations")["data"]] == [first["id"], second["id"]]
    assert call("GET", f"{url}/v1/conversations/{first['id']}") == {**renamed, "turns": []}
    deleted = call("DELETE", f"{url}/v1/conversations/{first['id']}")
    assert deleted == {"id": first["id"], "object": "conversation.deleted", "deleted": True}
    assert [c["id"] for c in call("GET", f"{url}/v1/conversations")["data"]] == [second["id"]]


def test_streamed_and_whole_turns_are_stored_with_their_sources_and_grounding(serve, indexed: Path) -> None:
    url, _ = serve()
    ident = call("POST", f"{url}/v1/conversations", {})["id"]
    question = "When does the aquarium feed its penguins herring? Tell me the times, please, in full detail."
    chunks = streamed(url, ident, {"question": question, "model": "rag", "max_tokens": 5})
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "rag" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] in ("stop", "length") and last["conversation"] == ident
    assert last["turn"] == 0 and "query" in last and last["support"] in ("supported", "partly", "unsupported")
    assert {"sources", "refused", "cited", "sentences"} <= last.keys()

    whole = call(
        "POST",
        f"{url}/v1/conversations/{ident}/turns",
        {"question": "And on Sundays?", "model": "rag", "stream": False},
    )
    assert whole["conversation"] == ident and set(whole["turn"]) == TURN_FIELDS and whole["turn"]["index"] == 1

    stored = call("GET", f"{url}/v1/conversations/{ident}")
    assert stored["turn_count"] == 2 and stored["title"] == question[:60]
    first, second = stored["turns"]
    assert second == whole["turn"]
    assert first["question"] == question and first["model"] == "rag" and first["complete"] is True
    assert first["answer"] and text.strip() in first["answer"]  # a chosen citation may follow the streamed words
    assert first["sources"] == last["sources"] and first["sentences"] == last["sentences"]
    assert first["refused"] is False and first["support"] == last["support"] and first["cited"] == last["cited"]
    assert first["timings"]["total_s"] > 0 and first["created"] >= stored["created"]
    # Sources are shown relative to the folder they were indexed from, each with its document's id.
    paths = {s["path"] for turn in (first, second) for s in turn["sources"]}
    assert "nested/penguins.txt" in paths
    for source in first["sources"] + second["sources"]:
        absolute = (indexed / source["path"]).resolve()
        assert not source["path"].startswith("/") and absolute.is_file()
        assert source["document"] == document_id(str(absolute))
    assert str(indexed) not in json.dumps(stored) and str(indexed) not in json.dumps(chunks)


def test_the_next_turn_sends_the_earlier_ones_to_the_model(serve) -> None:
    url, _ = serve()
    ident = call("POST", f"{url}/v1/conversations", {"model": "base"})["id"]
    ask = {"model": "base", "max_tokens": 3, "stream_options": {"include_usage": True}}
    first = streamed(url, ident, {**ask, "question": "Hello there"})[-1]
    second = streamed(url, ident, {**ask, "question": "Hello there"})[-1]
    assert first["query"] is None and second["turn"] == 1
    # The same question again, now after the first question and its answer: the prompt holds both.
    stored = call("GET", f"{url}/v1/conversations/{ident}")["turns"]
    assert stored[0]["answer"] and stored[1]["question"] == "Hello there"
    assert second["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]


def test_only_the_latest_turns_within_serve_max_messages_are_sent(serve) -> None:
    url, _ = serve("serve.max_messages=3")  # the new question and one earlier turn
    ident = call("POST", f"{url}/v1/conversations", {})["id"]
    ask = {"model": "base", "max_tokens": 3, "stream_options": {"include_usage": True}}
    prompts = [streamed(url, ident, {**ask, "question": "Hello there"})[-1]["usage"]["prompt_tokens"]]
    for _ in range(3):
        prompts.append(streamed(url, ident, {**ask, "question": "Hello there"})[-1]["usage"]["prompt_tokens"])
    assert prompts[1] > prompts[0]
    # From the second turn on, each prompt holds one earlier turn only: it stops growing with the conversation.
    assert max(prompts[1:]) - min(prompts[1:]) <= 3, prompts
    assert call("GET", f"{url}/v1/conversations/{ident}")["turn_count"] == 4


def test_a_client_that_leaves_mid_answer_leaves_an_incomplete_turn_and_frees_the_model(serve) -> None:
    url, engine = serve("llm.max_new_tokens=1500", "serve.max_tokens_limit=1500")
    ident = call("POST", f"{url}/v1/conversations", {})["id"]
    body = {"question": "Tell me a long story", "model": "base", "max_tokens": 1500, "temperature": 0}
    words = []
    with httpx.stream("POST", f"{url}/v1/conversations/{ident}/turns", json=body, headers=AUTH, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and (content := json.loads(line[6:])["choices"][0]["delta"].get("content")):
                words.append(content)
            if len(words) >= 3:
                break
    deadline = time.monotonic() + 10
    while not (turns := call("GET", f"{url}/v1/conversations/{ident}")["turns"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(turns) == 1 and turns[0]["complete"] is False, turns
    assert turns[0]["answer"].startswith("".join(words).strip()) and turns[0]["question"] == body["question"]
    # Generation stopped and the admission slot was freed: 1500 tokens would take the tiny LM far longer.
    while engine.queued and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.queued == 0 and len(turns[0]["answer"]) < 1500
    again = call("POST", f"{url}/v1/conversations/{ident}/turns", {**body, "max_tokens": 2, "stream": False})
    assert again["turn"]["index"] == 1 and again["turn"]["complete"] is True
    # A client that leaves a whole (non-streamed) answer: the same, an incomplete turn and a free model.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/conversations/{ident}/turns", json={**body, "stream": False}, headers=AUTH, timeout=1)
    deadline = time.monotonic() + 10
    while len(turns := call("GET", f"{url}/v1/conversations/{ident}")["turns"]) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(turns) == 3 and turns[2]["complete"] is False and turns[2]["question"] == body["question"]
    while engine.queued and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.queued == 0


def test_the_contract_errors_carry_their_codes_and_change_nothing(serve) -> None:
    url, _ = serve("serve.max_turns=1", "serve.max_conversations=2")
    missing = f"{url}/v1/conversations/conv-{'0' * 24}"
    for method, where, body in (
        ("GET", missing, None),
        ("PATCH", missing, {"title": "x"}),
        ("DELETE", missing, None),
        ("POST", f"{missing}/turns", {"question": "Hi", "model": "base"}),
    ):
        error = error_of(method, where, body, 404)
        assert error["code"] == "conversation_not_found" and "GET /v1/conversations" in error["message"]
    ident = call("POST", f"{url}/v1/conversations", {})["id"]
    turns = f"{url}/v1/conversations/{ident}/turns"
    for blank in ("", "  \n"):
        error = error_of("POST", turns, {"question": blank, "model": "base"}, 400)
        assert error["param"] == "question"
    assert error_of("PATCH", f"{url}/v1/conversations/{ident}", {"title": ""}, 400)["param"] == "title"
    assert error_of("PATCH", f"{url}/v1/conversations/{ident}", {"title": "t" * 201}, 400)["param"] == "title"
    assert error_of("POST", turns, {"question": "Hi", "model": "nope"}, 404)["code"] == "model_not_found"
    assert call("GET", f"{url}/v1/conversations/{ident}")["turn_count"] == 0  # refused turns are not stored
    call("POST", turns, {"question": "Hi", "model": "base", "max_tokens": 2, "stream": False})
    before = call("GET", f"{url}/v1/conversations/{ident}")
    for stream in (True, False):
        error = error_of("POST", turns, {"question": "Again", "model": "base", "stream": stream}, 403)
        assert error["code"] == "too_many_turns" and "serve.max_turns=1" in error["message"]
    assert call("GET", f"{url}/v1/conversations/{ident}") == before
    call("POST", f"{url}/v1/conversations", {})
    error = error_of("POST", f"{url}/v1/conversations", {}, 403)
    assert error["code"] == "too_many_conversations" and "serve.max_conversations=2" in error["message"]
    assert len(call("GET", f"{url}/v1/conversations")["data"]) == 2


def test_conversations_outlive_the_server(serve) -> None:
    url, _ = serve()
    ident = call("POST", f"{url}/v1/conversations", {"title": "Kept"})["id"]
    call("POST", f"{url}/v1/conversations/{ident}/turns", {"question": "Hi", "model": "base", "stream": False})
    before = call("GET", f"{url}/v1/conversations/{ident}")
    url, _ = serve()  # a new app over the same home, as after a restart
    assert call("GET", f"{url}/v1/conversations/{ident}") == before
    assert before["turn_count"] == 1 and before["turns"][0]["complete"] is True
