"""/health never waits on the index: a FIFO put in place of CURRENT is reported as damaged, and a lookup that
hangs (an engine at index.uri that never answers) as unreachable after serve.health_timeout_s, while every
other route keeps answering."""

from __future__ import annotations

import errno
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx

from models.config import load_config
from models.generate import load_language_model
from models.paths import index_dir
from ragtune.serve.background import running
from ragtune.serve.engine import Engine
from ragtune.serve.routes import create_app

KEY = "health-key-" + "h" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}


def release_readers(fifo: Path) -> None:
    """Let a reader blocked on `fifo` go (it reads an empty file), so no thread is left waiting on it."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError as exc:
        assert exc.errno == errno.ENXIO  # nobody is reading it: nothing to release


def test_a_fifo_in_place_of_current_is_damaged_not_a_hang(tiny_lm_path: Path, embedder) -> None:
    config = load_config(None, [f"llm.model={tiny_lm_path}", "llm.dtype=float32", "llm.device=cpu"])
    engine = Engine(config, embedder=embedder, lm=load_language_model(config.llm, progress=False))
    fifo = index_dir(config) / "CURRENT"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    try:
        with running(create_app(engine, KEY)) as url:
            started = time.monotonic()
            health = httpx.get(url + "/health", timeout=10)
            assert health.status_code == 200 and health.json()["index"] == "damaged"
            assert health.json()["index_generation"] is None
            assert time.monotonic() - started < config.serve.health_timeout_s
            assert httpx.get(url + "/v1/models", headers=AUTH, timeout=10).status_code == 200
    finally:
        release_readers(fifo)


def test_a_lookup_that_hangs_is_unreachable_after_the_timeout() -> None:
    config = load_config(None, ["serve.health_timeout_s=1"])
    answer, calls = threading.Event(), []

    def index_generation() -> str:
        calls.append(time.monotonic())
        answer.wait(60)  # an engine that does not answer, until the test lets it
        return "gen-000001"

    engine = SimpleNamespace(config=config, index_generation=index_generation)
    try:
        with running(create_app(engine, KEY)) as url:
            started = time.monotonic()
            with ThreadPoolExecutor(4) as pool:
                replies = list(pool.map(lambda _: httpx.get(url + "/health", timeout=10).json(), range(4)))
            assert time.monotonic() - started < 4  # each gave up after 1 s: none waited for the engine
            for health in replies:
                assert health["status"] == "ok" and health["index"] == "unreachable"
                assert health["index_error"] == (
                    "the index did not answer within serve.health_timeout_s=1.0 s; "
                    "check the engine at index.uri and the index folder's CURRENT"
                )
            assert len(calls) == 1  # the hung lookup is shared, not one more blocked thread per request
            assert httpx.get(url + "/openapi.json", headers=AUTH, timeout=5).status_code == 200
            answer.set()  # the engine answers at last: the next check says so
            deadline = time.monotonic() + 5
            while (health := httpx.get(url + "/health", timeout=5).json())["index"] != "ok":
                assert time.monotonic() < deadline, health
                time.sleep(0.05)
            assert health["index_generation"] == "gen-000001" and "index_error" not in health
    finally:
        answer.set()
