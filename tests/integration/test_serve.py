"""`ragtune serve` over a tiny LM, driven by the real openai client and raw HTTP on loopback."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from models.config import load_config
from models.generate import load_language_model
from rag.ingest import ingest
from ragtune.serve.background import running
from ragtune.serve.documents import document_id
from ragtune.serve.engine import Engine
from ragtune.serve.routes import create_app

KEY = "test-key-" + "x" * 24
PUBLIC = {"/health", "/", "/static"}  # the page and its assets hold no data; they ask for the key


@pytest.fixture
def server(tiny_lm_path: Path, docs: Path, embedder):
    config = load_config(
        None,
        [
            f"llm.model={tiny_lm_path}",
            "llm.dtype=float32",
            "llm.device=cpu",
            "llm.max_new_tokens=8",
            "serve.max_queue=4",
            "serve.max_request_bytes=20000",
            "serve.max_tokens_limit=64",
        ],
    )
    ingest([docs], config, embedder, progress=False)
    engine = Engine(config, embedder=embedder, lm=load_language_model(config.llm, progress=False))
    app = create_app(engine, KEY)
    with running(app) as url:
        yield url, app, engine, config, docs


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def test_official_client_non_streamed_with_sources(server) -> None:
    url, *_, docs = server
    reply = client(url).chat.completions.create(
        model="rag", messages=[{"role": "user", "content": "How long can I borrow a DVD?"}], max_tokens=5, seed=1
    )
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0 and 1 <= reply.usage.completion_tokens <= 5
    sources = reply.model_extra["sources"]
    # Shown relative to the folder it was indexed from, with its document's id: never the server's absolute path.
    assert sources[0]["path"] == "borrowing-rules.txt" and sources[0]["number"] == 1
    assert sources[0]["document"] == document_id(str((docs / "borrowing-rules.txt").resolve()))
    assert str(docs) not in reply.model_dump_json()


def test_rag_replies_carry_their_support_verdict_sentence_by_sentence(server) -> None:
    url, *_ = server
    reply = client(url).chat.completions.create(
        model="rag", messages=[{"role": "user", "content": "How long can I borrow a DVD?"}], max_tokens=5
    )
    extra, text = reply.model_extra, reply.choices[0].message.content
    # The answer is shown (rag.refuse_unsupported is off) with its verdict: the tiny LM's words are not in
    # the documents, so no sentence is supported, and each source says it supports nothing.
    assert extra["refused"] is False and extra["support"] in ("partly", "unsupported")
    assert all(s["supports"] is False for s in extra["sources"]) and extra["sources"]
    for sentence in extra["sentences"]:
        assert text[sentence["start"] : sentence["end"]] == sentence["text"] and sentence["support"] != "supported"


def test_rag_replies_refuse_unsupported_answers_when_configured(tiny_lm_path: Path, docs: Path, embedder) -> None:
    config = load_config(None, [f"llm.model={tiny_lm_path}", "llm.max_new_tokens=5", "rag.refuse_unsupported=true"])
    ingest([docs], config, embedder, progress=False)
    engine = Engine(config, embedder=embedder, lm=load_language_model(config.llm, progress=False))
    with running(create_app(engine, KEY)) as url:
        reply = client(url).chat.completions.create(
            model="rag", messages=[{"role": "user", "content": "How long can I borrow a DVD?"}], max_tokens=5
        )
    extra = reply.model_extra
    # The tiny LM's words are not in the documents: the reply is the fixed refusal, and says so.
    assert extra["refused"] is True and extra["cited"] == [] and extra["support"] is None
    assert reply.choices[0].message.content == "I could not find the answer in the documents."
    assert all(s["cited"] is False and s["supports"] is False for s in extra["sources"]) and extra["sources"]


def test_official_client_streamed_with_sources_in_last_chunk(server) -> None:
    url, *_ = server
    stream = client(url).chat.completions.create(
        model="rag",
        messages=[{"role": "user", "content": "When is the Eastside Branch closed?"}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    last = chunks[-1]
    assert last.choices[0].finish_reason in ("stop", "length") and last.usage.completion_tokens >= 1
    assert last.model_extra["sources"][0]["path"] == "hours-and-branches.html"
    same = client(url).chat.completions.create(
        model="rag", messages=[{"role": "user", "content": "When is the Eastside Branch closed?"}], max_tokens=6
    )
    assert same.choices[0].message.content == text  # greedy: streamed and whole answers agree


def test_models_base_and_embeddings(server) -> None:
    url, *_ = server
    api = client(url)
    assert [m.id for m in api.models.list()] == ["base", "rag"]
    reply = api.chat.completions.create(
        model="base",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_tokens=3,
    )
    assert reply.model_extra["sources"] == []
    vectors = api.embeddings.create(model="minilm-l6", input=["library card", "opening hours"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384 and vectors.usage.prompt_tokens > 0


def all_routes(routes: list) -> list:
    """The route table, flattened: FastAPI keeps each included router as one entry holding its routes."""
    flat = []
    for route in routes:
        included = getattr(route, "original_router", None)
        prefix = getattr(getattr(route, "include_context", None), "prefix", "")
        if included is not None:
            for inner in all_routes(included.routes):
                flat.append(type("Route", (), {"path": prefix + inner.path, "methods": inner.methods}))
        else:
            flat.append(route)
    return flat


def test_every_route_but_health_and_the_page_needs_the_key(server) -> None:
    url, app, *_ = server
    checked = 0
    for route in all_routes(app.routes):
        path = getattr(route, "path", "")
        if path in PUBLIC or path.startswith("/static"):
            continue
        for method in getattr(route, "methods", None) or {"GET"}:
            concrete = path.replace("{", "").replace("}", "")
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                response = httpx.request(method, url + concrete, headers=headers, json={})
                assert response.status_code == 401, (method, path, headers, response.status_code)
                assert response.json()["error"]["code"] == "invalid_api_key"
                assert KEY not in response.text
            checked += 1
    assert checked >= 4  # openapi.json, models, embeddings, chat/completions (+ files and jobs when wired)
    health = httpx.get(url + "/health").json()
    assert health["status"] == "ok" and health["index_generation"].startswith("gen-")
    assert httpx.get(url + "/").status_code == 200


@pytest.mark.parametrize(
    "body,status,fragment",
    [
        ({"model": "nope", "messages": [{"role": "user", "content": "q"}]}, 404, "model 'nope' does not exist"),
        ({"model": "rag", "messages": [{"role": "user", "content": "q"}], "max_tokens": 65}, 400, "over this server"),
        ({"model": "rag", "messages": []}, 400, "messages"),
        ({"model": "rag", "messages": [{"role": "tool", "content": "q"}]}, 400, "role"),
        ({"model": "rag", "messages": [{"role": "user", "content": "x" * 30000}]}, 413, "max_request_bytes"),
        ({"model": "finetune:ghost", "messages": [{"role": "user", "content": "q"}]}, 404, "does not exist"),
    ],
)
def test_bad_requests_get_openai_shaped_errors(server, body: dict, status: int, fragment: str) -> None:
    url, *_ = server
    response = httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == status
    error = response.json()["error"]
    assert fragment in error["message"] and {"type", "code", "param"} <= set(error)


def test_rag_without_an_index_is_503_and_base_still_answers(tiny_lm_path: Path, embedder) -> None:
    config = load_config(None, [f"llm.model={tiny_lm_path}", "llm.dtype=float32", "llm.max_new_tokens=2"])
    engine = Engine(config, embedder=embedder, lm=load_language_model(config.llm, progress=False))
    with running(create_app(engine, KEY)) as url:
        with pytest.raises(openai.InternalServerError, match="no documents indexed"):
            client(url).chat.completions.create(model="rag", messages=[{"role": "user", "content": "q"}])
        assert client(url).chat.completions.create(model="base", messages=[{"role": "user", "content": "q"}])


def test_a_body_that_is_not_json_is_explained(server) -> None:
    url, *_ = server
    response = httpx.post(
        url + "/v1/chat/completions",
        content=b"model=rag",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400 and "Content-Type: application/json" in response.json()["error"]["message"]


def test_official_client_raises_its_usual_exceptions(server) -> None:
    url, *_ = server
    with pytest.raises(openai.AuthenticationError):
        client(url, "wrong").models.list()
    with pytest.raises(openai.NotFoundError):
        client(url).chat.completions.create(model="nope", messages=[{"role": "user", "content": "q"}])


def test_a_disconnect_mid_stream_frees_the_model(server) -> None:
    url, _, engine, *_ = server
    body = {"model": "base", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 64, "stream": True}
    with httpx.stream(
        "POST", url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and '"content"' in line:
                break  # hang up after the first piece
    deadline = time.monotonic() + 20
    while engine.queued and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.queued == 0
    # The abandoned generation released the model: the next request is answered, not stuck behind it.
    short = {**body, "stream": False, "max_tokens": 2}
    response = httpx.post(
        url + "/v1/chat/completions", json=short, headers={"Authorization": f"Bearer {KEY}"}, timeout=20
    )
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] >= 1


def test_fifty_concurrent_requests_get_answers_or_clean_429(server) -> None:
    url, _, engine, *_ = server
    body = {"model": "rag", "messages": [{"role": "user", "content": "What does printing cost?"}], "max_tokens": 4}

    def ask(_: int) -> httpx.Response:
        return httpx.post(
            url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=120
        )

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(ask, range(50)))
    assert time.monotonic() - started < 120
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}, codes
    assert codes.count(200) >= 4  # at least the admitted places were answered
    for response in responses:
        data = response.json()
        if response.status_code == 200:
            assert data["choices"][0]["message"]["role"] == "assistant"
        else:
            assert data["error"]["type"] == "rate_limit_error"
    assert engine.queued == 0


def test_a_new_index_generation_is_served_without_restart(server, embedder) -> None:
    url, _, _, config, docs = server
    before = httpx.get(url + "/health").json()["index_generation"]
    (docs / "parking.txt").write_text("Parking at the Central Library is free for two hours.")
    ingest([docs], config, embedder, progress=False)  # another process would do the same: a new generation
    assert httpx.get(url + "/health").json()["index_generation"] != before
    reply = client(url).chat.completions.create(
        model="rag", messages=[{"role": "user", "content": "Is parking free at the Central Library?"}], max_tokens=3
    )
    assert reply.model_extra["sources"][0]["path"] == "parking.txt"


def test_openapi_schema_is_served(server) -> None:
    url, *_ = server
    assert httpx.get(url + "/openapi.json").status_code == 401
    schema = httpx.get(url + "/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert "/v1/chat/completions" in schema["paths"] and "/v1/embeddings" in schema["paths"]
    docs = httpx.get(url + "/docs", headers={"Authorization": f"Bearer {KEY}"})
    assert docs.status_code == 404  # no CDN-loading UI


def test_embeddings_as_plain_floats(server) -> None:
    url, *_ = server
    response = httpx.post(
        url + "/v1/embeddings",
        json={"model": "minilm-l6", "input": "card", "encoding_format": "float"},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    vector = response.json()["data"][0]["embedding"]
    assert len(vector) == 384 and abs(sum(v * v for v in vector) - 1) < 1e-3


def test_bodies_are_bounded_and_keys_checked_before_reading(server) -> None:
    url, *_ = server

    def chunks(size: int):
        for _ in range(size // 10000):
            yield b"x" * 10000

    no_key = httpx.post(url + "/v1/chat/completions", content=chunks(200000))  # chunked: no Content-Length
    assert no_key.status_code == 401
    too_big = httpx.post(
        url + "/v1/chat/completions", content=chunks(200000), headers={"Authorization": f"Bearer {KEY}"}
    )
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "request_too_large"


def test_stream_errors_before_the_first_token_are_http_errors(tiny_lm_path: Path, embedder) -> None:
    config = load_config(None, [f"llm.model={tiny_lm_path}", "llm.dtype=float32", "llm.max_new_tokens=2"])
    engine = Engine(config, embedder=embedder, lm=load_language_model(config.llm, progress=False))
    with running(create_app(engine, KEY)) as url:
        with pytest.raises(openai.InternalServerError, match="no documents indexed"):
            list(
                client(url).chat.completions.create(
                    model="rag", messages=[{"role": "user", "content": "q"}], stream=True
                )
            )
    assert engine.queued == 0


def test_rag_replies_read_the_conversation_before_the_question(server, embedder) -> None:
    from dataclasses import replace

    from models.generate import SamplingParams

    _, _, engine, config, _ = server
    rules = Engine(replace(config, rag=replace(config.rag, followup="rules")), embedder=embedder, lm=engine.lm)
    earlier = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "How long can I borrow a DVD?"},
        {"role": "assistant", "content": "Seven days."},
    ]
    params = SamplingParams(max_new_tokens=4)
    reply = rules.reply("rag", [*earlier, {"role": "user", "content": "Can it be renewed?"}], params)
    list(reply)
    # The last user turn is the question; retrieval searched with it made standalone from the turns before it.
    assert reply.answer.question == "Can it be renewed?" and reply.answer.query == "Can it be renewed? (DVD)"
    alone = rules.reply("rag", [{"role": "user", "content": "Can it be renewed?"}], params)
    list(alone)
    assert alone.answer.query == "Can it be renewed?"
    assert reply.answer.usage.prompt_tokens > alone.answer.usage.prompt_tokens  # the earlier turns are in the prompt
    closed = rules.reply("base", [*earlier, {"role": "user", "content": "Can it be renewed?"}], params)
    list(closed)
    assert closed.answer.query is None
