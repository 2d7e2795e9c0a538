"""embedder.backend=openai: vectors from a second `ragtune serve` on loopback match local ones, and a server that is
down, runs another model, answers garbage, is slow, busy or caps its batch size is handled by name.

The real server is create_app over an Engine with the session embedder (the packaged MiniLM) and the tiny LM; the
misbehaving ones are small FastAPI apps written here.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from models.config import EmbedderConfig, load_config
from models.embedders import build_embedder
from models.errors import ConfigError, ModelError, RemoteModelError
from models.generate import load_language_model
from models.paths import index_dir
from models.remote_embedding import RemoteEmbedder
from rag.collection import expectation, open_snapshot
from rag.ingest import ingest
from rag.retrieve import build_retriever
from ragtune.serve.answers import base64_floats
from ragtune.serve.background import running
from ragtune.serve.engine import Engine
from ragtune.serve.routes import create_app
from tests.remote import free_port

KEY = "embed-key-" + "k" * 24
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TEXTS = ["When does the library open?", "A DVD may be borrowed for seven days.", "Late fees", "x", "Eastside Branch"]


@pytest.fixture(scope="module")
def served(tiny_lm_path: Path, embedder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real ragtune app serving /v1/embeddings with the packaged MiniLM; yields its /v1 address and key file."""
    folder = tmp_path_factory.mktemp("embedding-server")
    key_file = folder / "key.txt"
    key_file.write_text(KEY + "\n")
    config = load_config(None, [f"llm.model={tiny_lm_path}", "llm.dtype=float32", "index.name=server-side"])
    engine = Engine(config, embedder=embedder, lm=load_language_model(config.llm))
    with running(create_app(engine, KEY)) as url:
        yield f"{url}/v1", key_file


def remote(url: str, key_file: Path | None = None, **settings: Any) -> RemoteEmbedder:
    config = EmbedderConfig(backend="openai", base_url=url, api_key_file=key_file and str(key_file), **settings)
    embedder = build_embedder(config)
    assert isinstance(embedder, RemoteEmbedder)
    return embedder


@contextmanager
def fake_server(answer: Callable[[dict[str, Any]], Any]) -> Iterator[str]:
    """A FastAPI app whose POST /v1/embeddings returns what `answer` makes of the request's JSON body."""
    app = FastAPI()
    app.state.requests = []

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Any:
        body = await request.json()
        app.state.requests.append(body)
        return answer(body)

    with running(app) as url:
        yield f"{url}/v1"


def listing(vectors: np.ndarray, encoding: str = "float") -> dict[str, Any]:
    encode = base64_floats if encoding == "base64" else np.ndarray.tolist
    rows = [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)]
    return {"object": "list", "data": rows[::-1]}  # out of order on purpose: the client sorts by index


def test_vectors_match_the_local_model_and_chunking_stays_local(served: tuple[str, Path], embedder) -> None:
    url, key_file = served
    far = remote(url, key_file, batch_size=2)  # 5 texts: three requests
    assert (far.dim, far.max_tokens, far.name) == (embedder.dim, embedder.max_tokens, embedder.name)
    assert far.model is None  # the local weights were freed after the probe
    text = "Borrowing rules: DVDs 7 days, books 21 days. Überfällig? Late fees are $0.25/day."
    assert far.token_offsets(text) == embedder.token_offsets(text)
    vectors = far.encode(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), embedder.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(vectors * embedder.encode(TEXTS), axis=1)) > 0.999
    assert far.encode([]).shape == (0, embedder.dim)
    far.close()


@pytest.mark.slow
def test_an_index_built_through_the_server_equals_a_local_one(served: tuple[str, Path], embedder, docs: Path) -> None:
    url, key_file = served
    local_config = load_config(None, ["index.name=local"])
    remote_config = load_config(
        None,
        [
            "index.name=remote",
            "embedder.backend=openai",
            f"embedder.base_url={url}",
            f"embedder.api_key_file={key_file}",
        ],
    )
    far = build_embedder(remote_config.embedder)
    ingest([docs], local_config, embedder, progress=False)
    ingest([docs], remote_config, far, progress=False)

    def contents(config) -> dict[tuple[str, int, str], np.ndarray]:
        snapshot = open_snapshot(index_dir(config), expectation(config, embedder.dim))
        try:
            ids = snapshot.store.live_ids()
            chunks = snapshot.store.chunks(ids)
            vectors = snapshot.index.vectors(ids)
            return {(Path(chunks[i].path).name, chunks[i].ordinal, chunks[i].text): v for i, v in zip(ids, vectors)}
        finally:
            snapshot.close()

    here, there = contents(local_config), contents(remote_config)
    assert here.keys() == there.keys() and len(here) > 5  # the same chunks: cut by the same local tokenizer
    assert min(float(here[k] @ there[k]) for k in here) > 0.999
    # Each index opens under the other's config: the manifest names the same embedder either way.
    open_snapshot(index_dir(remote_config), expectation(local_config, embedder.dim)).close()

    questions = [json.loads(line)["question"] for line in (EXAMPLES / "questions.jsonl").read_text().splitlines()]
    near = build_retriever(index_dir(local_config), local_config, embedder)
    away = build_retriever(index_dir(remote_config), remote_config, far)
    for question in questions:
        expected = [(s.path, s.chunk) for s in near.retrieve(question).sources]
        assert expected and [(s.path, s.chunk) for s in away.retrieve(question).sources] == expected, question
    far.close()


def test_a_server_that_is_down_is_named() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    far = remote(url, max_retries=1)
    started = time.monotonic()
    with pytest.raises(RemoteModelError, match=f"cannot reach embedder.base_url={re.escape(url)} .*start the server"):
        far.encode(TEXTS)
    assert time.monotonic() - started < 5  # one retry after 0.5 s, then the error


def test_a_server_with_another_dimension_is_refused_before_any_vector_is_used() -> None:
    with fake_server(lambda body: listing(np.ones((len(body["input"]), 8), dtype=np.float32))) as url:
        far = remote(url, served_model="tiny-8")
        with pytest.raises(
            ModelError, match=r"serves 'tiny-8' with 8-dimensional vectors but embedder.model 'minilm-l6' has 384: "
            r"set embedder.served_model"
        ):  # fmt: skip
            far.encode(TEXTS)


def test_a_server_running_another_model_of_the_same_dimension_is_refused() -> None:
    rng = np.random.default_rng(0)
    with fake_server(lambda body: listing(rng.standard_normal((len(body["input"]), 384)), "base64")) as url:
        with pytest.raises(ModelError, match=r"with other vectors than embedder.model 'minilm-l6' \(cosine "):
            remote(url).encode(TEXTS)


@pytest.mark.parametrize(
    "answer",
    [
        lambda body: PlainTextResponse("<html>proxy error</html>"),
        lambda body: {"data": "nope"},
        lambda body: {"data": [{"index": 0, "embedding": "not base64!"}]},
        lambda body: {"data": []},
    ],
    ids=["not-json", "data-not-a-list", "bad-base64", "no-vectors"],
)
def test_garbage_is_a_remote_model_error(answer: Callable[[dict[str, Any]], Any]) -> None:
    with fake_server(answer) as url:
        with pytest.raises(RemoteModelError, match=f"embedder.base_url={re.escape(url)}"):
            remote(url).encode(TEXTS)


def test_a_slow_server_times_out() -> None:
    def slow(body: dict[str, Any]) -> Any:
        time.sleep(2)
        return {"data": []}

    with fake_server(slow) as url:
        far = remote(url, read_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(
            RemoteModelError, match=r"no answer from embedder.base_url=.* within embedder.read_timeout=0.5"
        ):
            far.encode(TEXTS)
        assert time.monotonic() - started < 2


def test_a_busy_server_is_retried(embedder, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def busy_once(body: dict[str, Any]) -> Any:
        calls.append(len(body["input"]))
        if len(calls) == 1:
            return JSONResponse({"error": {"message": "busy"}}, status_code=429, headers={"Retry-After": "0"})
        return listing(embedder.encode(body["input"]), body["encoding_format"])

    with fake_server(busy_once) as url, caplog.at_level(logging.WARNING, logger="ragtune.remote"):
        vectors = remote(url).encode(TEXTS)
    assert calls == [1, 1, len(TEXTS)]  # the probe, its retry, then the texts
    assert any("answered 429" in r.getMessage() and "retrying in" in r.getMessage() for r in caplog.records)
    assert np.min(np.sum(vectors * embedder.encode(TEXTS), axis=1)) > 0.999


def test_a_server_that_caps_inputs_per_request_gets_smaller_batches(embedder) -> None:
    sizes: list[int] = []

    def capped(body: dict[str, Any]) -> Any:
        sizes.append(len(body["input"]))
        if len(body["input"]) > 2:
            return JSONResponse({"error": "batch size 5 > maximum allowed batch size 2"}, status_code=413)
        return listing(embedder.encode(body["input"]), body["encoding_format"])

    with fake_server(capped) as url:
        vectors = remote(url).encode(TEXTS)
    assert sizes == [1, 5, 2, 2, 1]  # probe; refused; then halves, kept for the rest
    assert np.min(np.sum(vectors * embedder.encode(TEXTS), axis=1)) > 0.999


def test_a_wrong_key_names_the_key_file(served: tuple[str, Path], tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("w" * 34)
    with pytest.raises(RemoteModelError, match="answered 401 to POST /embeddings: .*check embedder.api_key_file"):
        remote(served[0], wrong).encode(TEXTS)
    with pytest.raises(ConfigError, match="embedder.api_key_file: cannot read"):
        remote(served[0], tmp_path / "missing.txt")


def test_a_model_the_server_does_not_serve_names_served_model() -> None:
    def unknown(body: dict[str, Any]) -> Any:
        return JSONResponse({"error": {"message": f"model {body['model']!r} not found"}}, status_code=404)

    with fake_server(unknown) as url:
        far = remote(url, served_model="nope")
        with pytest.raises(ModelError, match=r"answered 404 .*'nope' not found; check that embedder.served_model"):
            far.encode(TEXTS)
        assert far._encoding == "float"  # base64 was tried first, then plain floats
