"""The web app in headless Chromium against a real server: a streamed answer, its sources, error messages.

The server and browser fixtures here serve tests/integration/test_serve_app.py as well.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import NoReturn

import pytest

from models.config import Config, load_config
from models.generate import load_language_model
from models.paths import data_home
from rag.ingest import ingest
from ragtune.serve.background import running
from ragtune.serve.conversation_routes import conversations_router
from ragtune.serve.conversations import ConversationStore, conversations_file
from ragtune.serve.engine import Engine
from ragtune.serve.library import Library
from ragtune.serve.library_routes import library_router, reports_router
from ragtune.serve.routes import create_app

CHROMIUM = "/usr/bin/chromium"  # Debian's browser: `playwright install` would download one from the internet
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY = "k" * 32
TIMEOUT_MS = 60_000  # a 2-core machine generating with a tiny model on CPU


def skip(reason: str) -> NoReturn:
    print(f"test_serve_page: skipped: {reason}")
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip("the playwright package is missing: pip install playwright==1.65.2 (scripts/setup.sh --dev does it)")
    if shutil.which(CHROMIUM) is None:
        skip(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does it when run as root)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@contextmanager
def serving(config: Config, embedder, lm=None) -> Iterator[str]:
    """The whole app (chat, conversations, document library, reports) over `config`, served by uvicorn on a free
    loopback port, with the library's indexing worker running; yields its URL."""
    engine = Engine(config, embedder=embedder, lm=lm)
    store = ConversationStore(conversations_file(data_home()), config.serve)
    library = Library(config, embedder)
    routers = [conversations_router(store, engine), library_router(library, engine), reports_router(config)]
    library.start()
    try:
        with running(create_app(engine, KEY, extra_routers=routers)) as url:
            yield url
    finally:
        library.stop()
        store.close()


def tiny_config(tiny_lm_path: Path, *overrides: str) -> Config:
    base = [f"llm.model={tiny_lm_path}", "llm.dtype=float32", "llm.device=cpu", "llm.max_new_tokens=8"]
    return load_config(None, [*base, *overrides])


@pytest.fixture
def server(docs: Path, tiny_lm_path: Path, embedder) -> Iterator[str]:
    """A real app over the example documents, served by uvicorn on a free loopback port; yields its URL."""
    config = tiny_config(tiny_lm_path)
    ingest([docs], config, embedder)
    with serving(config, embedder, load_language_model(config.llm, progress=False)) as url:
        yield url


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))  # an uncaught exception in app.js
    page.goto(url)
    return page, errors


def screenshot(page, path: Path) -> None:
    """Save the whole page as evidence of how it looks (kept under pytest's tmp_path)."""
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_page_streams_an_answer_with_numbered_sources(browser, server: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page, errors = open_page(browser, server)
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Connect").click()
    model = page.get_by_label("Model")
    expect(model).to_be_enabled()
    assert model.input_value() == "rag"  # picked by default when the server offers it
    model.select_option("rag")
    page.get_by_label("Question").fill("How long can I borrow a DVD?")
    page.get_by_label("Question").press("Enter")

    expect(page.locator("#status")).to_have_text(re.compile(r"^Done in"))
    answer = page.get_by_test_id("answer").last
    first = answer.locator(".sources > li").first
    expect(first.locator(".number")).to_have_text("[1]")
    expect(first.locator("code")).to_have_text(re.compile(r"borrowing-rules\.txt$"))
    assert answer.locator(".answer").text_content().strip()
    assert page.locator("#error").is_hidden()
    panel = page.get_by_test_id("citation-panel")
    expect(panel).to_be_hidden()
    first.get_by_role("button").click()  # the passage text opens on demand, in the source panel
    expect(panel.locator("pre")).to_be_visible()
    expect(panel.locator("pre")).to_contain_text("DVD")
    # The key lives in sessionStorage only: never in the address bar.
    assert KEY not in page.url
    assert page.evaluate("sessionStorage.getItem('ragtune.apiKey')") == KEY

    screenshot(page, tmp_path / "chat-page.png")
    assert errors == []


def fulfill(route, request, status: int, body: dict) -> None:
    route.fulfill(status=status, json=body)


def test_page_shows_api_and_network_errors(browser, server: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page, errors = open_page(browser, server)
    page.get_by_label("API key").fill("wrong-" + KEY)
    page.get_by_label("API key").press("Enter")
    alert = page.get_by_role("alert")
    expect(alert).to_have_text(
        "Wrong or missing API key (HTTP 401): missing or wrong API key: send `Authorization: Bearer KEY`"
    )
    expect(page.get_by_label("Model")).to_be_disabled()
    screenshot(page, tmp_path / "wrong-key.png")

    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Connect").click()
    expect(page.get_by_label("Model")).to_be_enabled()
    expect(alert).to_be_hidden()
    page.get_by_label("Question").fill("Where is the library?")
    # Statuses the tiny server does not produce on demand: the browser answers them, in the OpenAI error shape.
    chat = "**/v1/conversations/*/turns"
    for status, message, shown in [
        (404, "model 'x' does not exist", "Not found (HTTP 404): model 'x' does not exist"),
        (429, "server busy", "The server is busy, try again in a moment (HTTP 429): server busy"),
    ]:
        body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
        page.route(chat, partial(fulfill, status=status, body=body))
        page.get_by_role("button", name="Ask").click()
        expect(alert).to_have_text(shown)
        page.unroute(chat)
    page.route(chat, lambda route: route.abort("connectionrefused"))
    page.get_by_role("button", name="Ask").click()
    expect(alert).to_contain_text("Cannot reach the server")
    assert errors == []


def test_page_shows_the_support_verdict_beside_the_answer(browser, server: str, tmp_path: Path) -> None:
    """The verdict the last chunk carries, in words, with the sources that support the answer marked."""
    from playwright.sync_api import expect

    page, errors = open_page(browser, server)
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Connect").click()
    expect(page.get_by_label("Model")).to_be_enabled()
    answer = "DVDs are lent for 7 days. The café opens at 7."
    sentences = [
        {"start": 0, "end": 25, "support": "supported", "source": 1, "span": [0, 30], "text": answer[:25]},
        {"start": 26, "end": 46, "support": "unsupported", "source": None, "span": None, "text": answer[26:]},
    ]
    source = {"number": 1, "path": "borrowing-rules.txt", "chunk": 0, "locator": "", "score": 0.9}
    source["text"] = "DVDs: 7 days."
    last = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "sources": [{**source, "supports": True}]}
    last.update(refused=False, cited=[], support="partly", sentences=sentences)
    first = {"choices": [{"index": 0, "delta": {"content": answer}, "finish_reason": None}]}
    stream = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in (first, last)) + "data: [DONE]\n\n"
    page.route(
        "**/v1/conversations/*/turns",
        lambda route: route.fulfill(status=200, body=stream, headers={"Content-Type": "text/event-stream"}),
    )
    page.get_by_label("Question").fill("How long can I borrow a DVD?")
    page.get_by_role("button", name="Ask").click()
    verdict = page.get_by_role("status").filter(has_text="supported")
    expect(verdict).to_have_text("Partly supported: 1 of 2 sentences found in the sources; check the others.")
    expect(page.get_by_test_id("answer").locator(".sources > li").first).to_contain_text("supports the answer")
    # The source opens in the panel with the sentence's span (clipped to the passage) marked.
    page.get_by_test_id("answer").locator(".sources > li").first.get_by_role("button").click()
    expect(page.get_by_test_id("citation-panel").locator("mark")).to_have_text("DVDs: 7 days.")
    screenshot(page, tmp_path / "support-verdict.png")
    assert errors == []
