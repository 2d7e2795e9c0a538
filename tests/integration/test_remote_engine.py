"""llm.backend=openai beyond the generator contract: a server that is down, stuck, busy or failing, token counts,
adapters it lacks, and `ragtune serve` in front of a failing remote model (503, never a hang).

The remote is a real `ragtune serve` in its own process (tests/remote.py) with one admission place
(serve.max_queue=1) and no index, so its `rag` model fails with a real 503.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from models.config import LLMConfig, load_config
from models.errors import ConfigError, ModelError, RemoteModelError
from models.generate import AdapterRef, SamplingParams, collect, load_language_model
from ragtune.serve.background import running
from ragtune.serve.engine import Engine
from ragtune.serve.routes import create_app
from tests.remote import ServedRagtune, free_port, served_ragtune

MESSAGES = [{"role": "user", "content": "When does the library open?"}]
FRONT_KEY = "front-key-" + "z" * 24


@pytest.fixture(scope="module")
def served(tiny_lm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedRagtune]:
    folder = tmp_path_factory.mktemp("served")
    with served_ragtune(tiny_lm_path, folder, "serve.max_queue=1", "serve.max_tokens_limit=2000") as server:
        yield server


@contextmanager
def silent_server() -> Iterator[str]:
    """A TCP port that accepts connections and never answers: a stuck model server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def retries(caplog: pytest.LogCaptureFixture) -> int:
    return sum("retrying in" in r.getMessage() for r in caplog.records if r.name == "ragtune.remote")


def test_a_server_that_is_down_is_named_at_once(tiny_lm_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(RemoteModelError, match=f"cannot reach llm.base_url={re.escape(url)} .*start the server"):
        load_language_model(LLMConfig(model=str(tiny_lm_path), backend="openai", base_url=url))
    assert time.monotonic() - started < 5


def test_a_server_that_never_answers_times_out(tiny_lm_path: Path) -> None:
    with silent_server() as url:
        config = LLMConfig(model=str(tiny_lm_path), backend="openai", base_url=url, read_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(RemoteModelError, match=r"no answer from llm.base_url=.* within llm.read_timeout=0.5 s"):
            load_language_model(config)
        assert time.monotonic() - started < 4


@contextmanager
def garbled_server() -> Iterator[str]:
    """A real HTTP server whose every answer claims gzip but is not: httpx cannot decode the body."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Garbled(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"this is not gzip at all"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # keep the test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Garbled)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_an_answer_httpx_cannot_decode_is_a_remote_model_error(tiny_lm_path: Path) -> None:
    """httpx.DecodingError is no TransportError; it must still become the typed error naming llm.base_url."""
    with garbled_server() as url:
        with pytest.raises(
            RemoteModelError, match=rf"cannot read the answer of llm.base_url={re.escape(url)} to /models"
        ):
            load_language_model(LLMConfig(model=str(tiny_lm_path), backend="openai", base_url=url))


def test_closing_the_model_closes_its_http_client(served: ServedRagtune) -> None:
    lm = load_language_model(served.llm())
    assert not lm.server.client.is_closed
    lm.close()
    assert lm.server.client.is_closed


def test_a_missing_base_url_and_a_wrong_key_are_named(served: ServedRagtune, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="llm.base_url: llm.backend=openai needs the server's address"):
        load_language_model(LLMConfig(backend="openai"))
    wrong = tmp_path / "key"
    wrong.write_text("not-the-key-" + "q" * 20)
    with pytest.raises(RemoteModelError, match="answered 401 to GET /models: .*check llm.api_key_file"):
        load_language_model(served.llm(api_key_file=str(wrong)))
    with pytest.raises(ModelError, match=r"does not serve 'gpt-9' \(it serves: base, rag\)"):
        load_language_model(served.llm(served_model="gpt-9"))


def test_503_is_retried_with_backoff_then_named(served: ServedRagtune, caplog: pytest.LogCaptureFixture) -> None:
    lm = load_language_model(served.llm(served_model="rag", max_retries=2))  # no index there: 503
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="ragtune.remote"):
        with pytest.raises(RemoteModelError, match=r"answered 503 .*no documents indexed.*\(attempts: 3\)"):
            collect(lm.generator().stream(MESSAGES, SamplingParams(max_new_tokens=4)))
    assert time.monotonic() - started >= 1.5  # waited 0.5 s, then 1 s
    assert retries(caplog) == 2


def test_a_busy_server_429_is_retried_until_it_frees(served: ServedRagtune, caplog: pytest.LogCaptureFixture) -> None:
    impatient = load_language_model(served.llm(max_retries=0)).generator()
    hold = iter(impatient.stream(MESSAGES, SamplingParams(max_new_tokens=1500)))
    next(hold)  # the server's one admission place is taken while this answer streams
    with pytest.raises(RemoteModelError, match=r"answered 429 .*busy.*\(attempts: 1\)"):
        collect(impatient.stream(MESSAGES, SamplingParams(max_new_tokens=4)))
    patient = load_language_model(served.llm(max_retries=4)).generator()
    threading.Timer(0.2, hold.close).start()  # the first client leaves; its place is freed
    with caplog.at_level(logging.WARNING, logger="ragtune.remote"):
        text = collect(patient.stream(MESSAGES, SamplingParams(max_new_tokens=4)))
    assert text and retries(caplog) >= 1


def test_closing_the_stream_ends_the_servers_generation(served: ServedRagtune) -> None:
    generator = load_language_model(served.llm(max_retries=0)).generator()
    long = SamplingParams(max_new_tokens=1900)
    started = time.monotonic()
    whole = generator.stream(MESSAGES, long)
    collect(whole)
    whole_s = time.monotonic() - started
    assert whole.usage.completion_tokens == 1900  # the tiny LM never ends early: the measure is the full answer
    hold = iter(generator.stream(MESSAGES, long))
    next(hold)
    hold.close()  # the server's one admission place is free again once it has stopped generating
    closed = time.monotonic()
    while True:
        try:
            collect(generator.stream(MESSAGES, SamplingParams(max_new_tokens=2)))
            break
        except RemoteModelError as exc:
            assert "answered 429" in str(exc)
            time.sleep(0.02)
    assert time.monotonic() - closed < whole_s / 4, (time.monotonic() - closed, whole_s)


def test_token_counts_come_from_the_local_base_else_an_estimate(served: ServedRagtune, tiny_lm_path: Path) -> None:
    from transformers import AutoTokenizer

    text = "When does the library open on Sundays?"
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_path)
    exact = load_language_model(served.llm()).generator()
    assert exact.count_tokens(text) == len(tokenizer(text, add_special_tokens=False)["input_ids"])
    # No local copy of the base: 4 characters a token, and the server alone judges the prompt's length.
    elsewhere = served.llm(LLMConfig(model="a-model-elsewhere", context_window=8))
    estimated = load_language_model(elsewhere).generator()
    assert estimated.count_tokens(text) == 10
    stream = estimated.stream(MESSAGES, SamplingParams(max_new_tokens=3))
    assert collect(stream) and stream.usage.prompt_tokens > 8  # the server's own count, sent as usage


def test_more_stop_strings_than_a_server_takes_are_applied_here(served: ServedRagtune) -> None:
    generator = load_language_model(served.llm()).generator()
    greedy = collect(generator.stream(MESSAGES, SamplingParams(max_new_tokens=12)))
    stops = ("never-1", "never-2", "never-3", "never-4", greedy.strip()[2])
    cut = collect(generator.stream(MESSAGES, SamplingParams(max_new_tokens=12, stop=stops)))
    assert greedy.startswith(cut) and len(cut) < len(greedy) and stops[-1] not in cut


def test_what_the_server_lacks_is_a_clear_error(served: ServedRagtune, tmp_path: Path) -> None:
    lm = load_language_model(served.llm())
    with pytest.raises(ModelError, match="served model lacks LoRA nope; start the server with --lora-modules nope=DIR"):
        lm.load_adapter(AdapterRef("nope", tmp_path))
    with pytest.raises(ModelError, match=r"does not expose log-probabilities \(/v1/completions"):
        lm.generator().continuation_logprobs(MESSAGES, ["yes", "no"])


def test_serve_in_front_of_a_failing_remote_answers_503(served: ServedRagtune, embedder) -> None:
    config = load_config(None, ["serve.max_tokens_limit=64"])
    config = replace(config, llm=served.llm(replace(config.llm, model=str(served.base)), served_model="rag"))
    lm = load_language_model(replace(config.llm, max_retries=0))
    app = create_app(Engine(config, embedder=embedder, lm=lm), FRONT_KEY)
    with running(app) as url:
        for stream in (False, True):
            body = {"model": "base", "messages": MESSAGES, "max_tokens": 4, "stream": stream}
            response = httpx.post(
                f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {FRONT_KEY}"}, timeout=30
            )
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["code"] == "model_unavailable" and "llm.base_url=" in error["message"]
