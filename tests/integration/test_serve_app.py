"""The web app in headless Chromium against a real server: conversations, streamed answers, citations, the document
library, the mode picker, reports, keyboard-only use and accessible names."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from models.config import load_config
from models.generate import load_language_model
from rag.ingest import ingest
from tests.conftest import EXAMPLES, REPO
from tests.integration.test_serve_page import KEY, TIMEOUT_MS, browser, screenshot, serving, tiny_config

__all__ = ["browser"]  # the Chromium fixture, shared with test_serve_page.py

EXAMPLE_REPORT = REPO / "reports" / "example"
INDEXING_MS = 180_000  # the library's worker embeds the upload on a shared 2-core machine
ANSWER_MS = 300_000  # the packaged LM writing a whole answer on the same machine
# A line no markdown renderer should ever turn into markup here: the report is shown as text.
HOSTILE = '<img src="/x" onerror="window.injected = 1"><script>window.injected = 2</script>'


@pytest.fixture(autouse=True)
def patient_assertions() -> Iterator[None]:
    """Assertions wait as long as actions do (a shared 2-core machine), in this module's tests only."""
    try:
        from playwright.sync_api import expect
    except ImportError:  # the browser fixture skips the test, saying why
        yield
        return
    expect.set_options(timeout=TIMEOUT_MS)
    yield
    expect.set_options(timeout=5_000)  # Playwright's own default, which the other tests expect


@pytest.fixture
def reports_dir(tmp_path: Path) -> Path:
    """A reports folder holding a copy of the shipped example report, with a line of markup added to its text."""
    if not (EXAMPLE_REPORT / "results.json").is_file():
        pytest.skip(f"{EXAMPLE_REPORT} is missing: `ragtune compare` writes it (docs/compare.md)")
    folder = tmp_path / "reports"
    shutil.copytree(EXAMPLE_REPORT, folder / "example")
    report = folder / "example" / "report.md"
    report.write_text(report.read_text(encoding="utf-8") + f"\n{HOSTILE}\n", encoding="utf-8")
    return folder


@pytest.fixture
def server(docs: Path, tiny_lm_path: Path, embedder, reports_dir: Path) -> Iterator[str]:
    """The whole app over the example documents with the tiny LM, its reports in `reports_dir`; yields its URL."""
    config = tiny_config(tiny_lm_path, f"serve.reports_dir={reports_dir}")
    ingest([docs], config, embedder)
    with serving(config, embedder, load_language_model(config.llm, progress=False)) as url:
        yield url


class Watched:
    """A page with what it did recorded: uncaught exceptions, console errors and every URL it requested."""

    def __init__(self, browser, url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1200, "height": 900})
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.goto(url)

    def check(self) -> None:
        """No error of any kind, and no request left this machine (the page works offline)."""
        assert self.errors == []
        outside = [u for u in self.requests if urlsplit(u).scheme not in ("blob", "data")]
        outside = [u for u in outside if urlsplit(u).hostname != "127.0.0.1"]
        assert outside == []


def connect(page) -> None:
    from playwright.sync_api import expect

    page.get_by_test_id("api-key").fill(KEY)
    page.get_by_test_id("connect").click()
    expect(page.get_by_test_id("mode")).to_be_enabled()


def ask(page, question: str, press: str | None = "Enter", timeout: float = TIMEOUT_MS) -> None:
    """Ask `question` and wait (up to `timeout` ms) for its answer to finish streaming."""
    from playwright.sync_api import expect

    answers = page.get_by_test_id("answer")
    before = answers.count()
    page.get_by_test_id("question").fill(question)
    if press:
        page.get_by_test_id("question").press(press)
    else:
        page.get_by_test_id("ask").click()
    expect(answers).to_have_count(before + 1)
    expect(answers.last).to_have_attribute("aria-busy", "false", timeout=timeout)
    expect(page.locator("#status")).to_have_text(re.compile(r"^Done in"))


def api(url: str, path: str) -> dict:
    reply = httpx.get(url + path, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    reply.raise_for_status()
    return reply.json()


def test_conversations_are_created_renamed_reopened_after_a_reload_and_deleted(browser, server: str, tmp_path) -> None:
    from playwright.sync_api import expect

    watched = Watched(browser, server)
    page = watched.page
    connect(page)
    items = page.get_by_test_id("conversation")
    expect(items).to_have_count(0)

    ask(page, "How long can I borrow a DVD?")
    expect(items).to_have_count(1)
    expect(items.first).to_contain_text("How long can I borrow a DVD?")  # titled by its first question
    assert page.get_by_test_id("answer").last.locator(".answer").text_content().strip()
    ask(page, "And for how long a book?", press=None)
    expect(page.get_by_test_id("answer")).to_have_count(2)

    page.get_by_role("button", name="Rename How long can I borrow a DVD?").click()
    title = page.get_by_role("textbox", name="New title for How long can I borrow a DVD?")
    title.fill("Loans")
    title.press("Enter")
    expect(items.first.get_by_role("button", name="Loans", exact=True)).to_be_visible()

    page.get_by_test_id("new-conversation").click()
    expect(page.get_by_test_id("answer")).to_have_count(0)
    ask(page, "Where is the library?")
    expect(items).to_have_count(2)
    expect(items.filter(has_text="Where is the library?")).to_have_count(1)

    # After a reload the key is still in this tab: the list comes back, and opening a conversation shows its turns.
    page.reload()
    expect(items).to_have_count(2)
    items.filter(has_text="Loans").get_by_role("button", name="Loans", exact=True).click()
    answers = page.get_by_test_id("answer")
    expect(answers).to_have_count(2)
    expect(page.locator(".message.user .text")).to_have_text(
        ["How long can I borrow a DVD?", "And for how long a book?"]
    )
    expect(answers.first.locator(".sources > li").first).to_contain_text("borrowing-rules.txt")
    expect(page.locator("#thread-title")).to_have_text("Loans")
    screenshot(page, tmp_path / "reopened-conversation.png")

    delete = page.get_by_role("button", name="Delete Loans")
    delete.click()
    page.get_by_role("button", name="Confirm: Delete Loans").click()  # a second press confirms
    expect(items).to_have_count(1)
    expect(page.get_by_test_id("answer")).to_have_count(0)  # the open one was deleted: the thread is empty
    assert [c["title"] for c in api(server, "/v1/conversations")["data"]] == ["Where is the library?"]
    watched.check()


def test_a_citation_opens_its_passage_in_the_panel(browser, server: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    watched = Watched(browser, server)
    page = watched.page
    connect(page)
    ask(page, "How long can I borrow a DVD?")
    citation = page.get_by_test_id("answer").last.get_by_test_id("citation").first
    number = int(citation.text_content().strip("[]"))
    citation.click()
    panel = page.get_by_test_id("citation-panel")
    expect(panel).to_be_visible()

    # The panel holds the cited source exactly as the server stored it, its supporting spans marked.
    conversation = page.get_by_test_id("conversation").first.get_attribute("data-id")
    turn = api(server, f"/v1/conversations/{conversation}")["turns"][-1]
    source = next(s for s in turn["sources"] if s["number"] == number)
    expect(panel.locator("pre")).to_have_text(source["text"])
    expect(panel.locator("code")).to_have_text(source["path"])
    assert not Path(source["path"]).is_absolute()  # shown as the API gives it: relative to its folder
    spans = [s["span"] for s in turn["sentences"] if s["source"] == number and s["span"]]
    expect(panel.locator("mark")).to_have_count(len(spans))  # the tiny LM's words are found in no passage
    screenshot(page, tmp_path / "citation-panel.png")

    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(citation).to_be_focused()  # focus goes back to the citation that opened the panel
    watched.check()


def test_a_pdf_source_shows_its_page_as_an_image(browser, server: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    watched = Watched(browser, server)
    page = watched.page
    connect(page)
    ask(page, "How much does it cost to print a black-and-white page?")
    pdf = page.get_by_test_id("answer").last.locator(".sources > li").filter(has_text="printing-and-wifi.pdf").first
    expect(pdf).to_contain_text("page 1")
    pdf.get_by_role("button").click()
    panel = page.get_by_test_id("citation-panel")
    image = panel.get_by_role("img", name="Page 1 of printing-and-wifi.pdf")
    expect(image).to_be_visible()  # fetched with the key, shown through an object URL
    assert image.get_attribute("src").startswith("blob:")
    assert image.evaluate("image => image.naturalWidth") > 0
    screenshot(page, tmp_path / "pdf-page.png")
    page.get_by_role("button", name="Close the source panel").click()
    expect(panel).to_be_hidden()
    watched.check()


def test_an_uploaded_file_is_indexed_and_can_be_deleted(browser, server: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    upload = tmp_path / "upload" / "reading-room.txt"
    upload.parent.mkdir()
    upload.write_text("The reading room on the second floor closes at 9 pm on Fridays.\n", encoding="utf-8")
    watched = Watched(browser, server)
    page = watched.page
    connect(page)
    page.get_by_role("button", name="Library").click()
    page.get_by_test_id("upload").set_input_files(str(upload))
    row = page.get_by_test_id("doc").filter(has_text="reading-room.txt")
    expect(row).to_contain_text("indexed", timeout=INDEXING_MS)
    expect(row).not_to_contain_text("queued")
    expect(row.locator("progress")).to_have_count(0)  # no progress bar once indexed
    # The documents indexed from another folder are listed too, and cannot be deleted from here.
    expect(page.get_by_test_id("doc").filter(has_text="borrowing-rules.txt")).to_contain_text("another folder")
    screenshot(page, tmp_path / "library.png")

    page.get_by_role("button", name="Delete reading-room.txt").click()
    page.get_by_role("button", name="Confirm: Delete reading-room.txt").click()
    expect(row).to_have_count(0)
    assert "reading-room.txt" not in [d["name"] for d in api(server, "/v1/library")["data"]]
    watched.check()


@pytest.fixture
def tight_server(docs: Path, tiny_lm_path: Path, embedder) -> Iterator[str]:
    """The whole app with small bounds: uploads of 4 KB at most, conversations of one turn."""
    config = tiny_config(tiny_lm_path, "serve.max_upload_bytes=4000", "serve.max_turns=1")
    ingest([docs], config, embedder)
    with serving(config, embedder, load_language_model(config.llm, progress=False)) as url:
        yield url


def test_bad_input_is_a_clear_message_in_the_page(browser, tight_server: str, tmp_path: Path) -> None:
    """An upload over the limit, a damaged file, a full conversation and one deleted elsewhere: each a message
    in the page (the API's 4xx, in words), and nothing already stored is lost."""
    from playwright.sync_api import expect

    folder = tmp_path / "upload"
    folder.mkdir()
    (folder / "big.txt").write_text("The reading room is quiet. " * 400, encoding="utf-8")  # 10.8 KB > 4 KB
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n" + b"\x00 not a pdf body " * 20)
    watched = Watched(browser, tight_server)
    page = watched.page
    connect(page)
    alert = page.get_by_role("alert")

    page.get_by_role("button", name="Library").click()
    page.get_by_test_id("upload").set_input_files(str(folder / "big.txt"))
    expect(alert).to_contain_text("The file is too large (HTTP 413)")
    expect(alert).to_contain_text("serve.max_upload_bytes")
    page.get_by_test_id("upload").set_input_files(str(folder / "broken.pdf"))
    row = page.get_by_test_id("doc").filter(has_text="broken.pdf")
    expect(row).to_contain_text("skipped", timeout=INDEXING_MS)  # with the reason, and the rest still indexed
    assert "big.txt" not in [d["name"] for d in api(tight_server, "/v1/library")["data"]]
    screenshot(page, tmp_path / "library-bad-input.png")

    page.get_by_role("button", name="Chat").click()
    ask(page, "How long can I borrow a DVD?")
    page.get_by_test_id("question").fill("And a book?")
    page.get_by_test_id("ask").click()
    expect(alert).to_contain_text("HTTP 403")
    expect(alert).to_contain_text("serve.max_turns")
    conversation = api(tight_server, "/v1/conversations")["data"][0]
    assert conversation["turn_count"] == 1  # the refused question changed nothing stored

    httpx.delete(
        f"{tight_server}/v1/conversations/{conversation['id']}", headers={"Authorization": f"Bearer {KEY}"}
    ).raise_for_status()
    page.get_by_test_id("question").fill("Is it still there?")
    page.get_by_test_id("ask").click()
    expect(alert).to_contain_text("HTTP 404")
    expect(alert).to_contain_text("conversation")
    # The deleted conversation leaves the list; the question, still in the box, now starts a new one.
    expect(page.get_by_test_id("conversation")).to_have_count(0)
    expect(page.get_by_test_id("question")).to_have_value("Is it still there?")
    ask(page, "Is it still there?", press=None)
    assert api(tight_server, "/v1/conversations")["data"][0]["turn_count"] == 1
    screenshot(page, tmp_path / "chat-bad-input.png")
    watched.errors = [e for e in watched.errors if "status of 4" not in e]  # the browser logs each 4xx reply
    watched.check()


def test_the_mode_picker_lists_the_servers_models(browser, server: str) -> None:
    from playwright.sync_api import expect

    watched = Watched(browser, server)
    page = watched.page
    connect(page)
    mode = page.get_by_test_id("mode")
    ids = [m["id"] for m in api(server, "/v1/models")["data"]]
    options = mode.locator("option")
    expect(options).to_have_count(len(ids))
    assert [options.nth(i).get_attribute("value") for i in range(len(ids))] == ids
    assert mode.input_value() == "rag"
    watched.check()


def test_the_reports_view_shows_a_report_as_text_with_its_charts(browser, server: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    watched = Watched(browser, server)
    page = watched.page
    connect(page)
    page.get_by_role("button", name="Reports").click()
    listed = page.locator("#reports > li")
    expect(listed).to_have_count(1)
    expect(listed.first).to_contain_text("example")
    expect(listed.first).to_contain_text("For this data: rag.")  # the verdict, beside the report's name
    page.get_by_role("button", name="Open report example").click()

    markdown = page.locator("#report-markdown")
    expect(markdown).to_contain_text("## Verdict")
    expect(markdown).to_contain_text(HOSTILE)  # the markup is shown as written, never run
    assert page.evaluate("window.injected") is None
    charts = api(server, "/v1/reports/example")["charts"]
    images = page.locator("#report-charts img")
    expect(images).to_have_count(len(charts))
    for i in range(len(charts)):
        expect(images.nth(i)).to_have_js_property("complete", True)
        assert images.nth(i).evaluate("image => image.naturalWidth") > 0
    screenshot(page, tmp_path / "report.png")
    watched.check()


def test_keyboard_alone_asks_opens_a_citation_and_closes_it(browser, server: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    watched = Watched(browser, server)
    page = watched.page
    keyboard = page.keyboard

    def tab_to(testid: str, key: str = "Tab", most: int = 40) -> None:
        for _ in range(most):
            keyboard.press(key)
            if page.evaluate("document.activeElement.dataset.testid") == testid:
                return
        raise AssertionError(f"{key} never reached {testid}")

    tab_to("api-key")
    keyboard.type(KEY)
    keyboard.press("Enter")
    expect(page.get_by_test_id("mode")).to_be_enabled()
    tab_to("question")
    keyboard.type("How long can I borrow a DVD?")
    keyboard.press("Enter")
    expect(page.get_by_test_id("answer")).to_have_count(1)
    expect(page.locator("#status")).to_have_text(re.compile(r"^Done in"))

    tab_to("citation", key="Shift+Tab")  # back from the question into the answer above it
    keyboard.press("Enter")
    panel = page.get_by_test_id("citation-panel")
    expect(panel).to_be_visible()
    expect(page.locator("#panel-title")).to_be_focused()
    keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(page.get_by_test_id("citation").first).to_be_focused()
    keyboard.press("Space")  # Space opens it as well
    expect(panel).to_be_visible()
    keyboard.press("Escape")

    # The conversation list: Enter on an item opens it.
    page.get_by_test_id("new-conversation").focus()
    keyboard.press("Enter")
    expect(page.get_by_test_id("answer")).to_have_count(0)
    expect(page.get_by_test_id("question")).to_be_focused()
    tab_to("conversation-open", key="Shift+Tab")
    keyboard.press("Enter")
    expect(page.get_by_test_id("answer")).to_have_count(1)
    screenshot(page, tmp_path / "keyboard.png")
    watched.check()


def test_every_control_has_an_accessible_name(browser, server: str) -> None:
    from playwright.sync_api import expect

    watched = Watched(browser, server)
    page = watched.page
    for role, name in [("textbox", "API key"), ("button", "Connect"), ("combobox", "Model")]:
        expect(page.get_by_role(role, name=name)).to_have_count(1)
    connect(page)
    ask(page, "How long can I borrow a DVD?")
    page.get_by_test_id("citation").first.click()
    for role, name in [
        ("button", "New conversation"),
        ("textbox", "Question"),
        ("button", "Ask"),
        ("button", "Chat"),
        ("button", "Library"),
        ("button", "Reports"),
        ("button", "Rename How long can I borrow a DVD?"),
        ("button", "Delete How long can I borrow a DVD?"),
        ("button", "Source 1: borrowing-rules.txt"),
        ("button", "Show source 1: borrowing-rules.txt"),
        ("button", "Close the source panel"),
        ("complementary", "Source [1]"),
    ]:
        expect(page.get_by_role(role, name=name, exact=True).first).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="upported")).to_have_count(1)  # the verdict
    unnamed = unnamed_controls(page)
    page.get_by_role("button", name="Library").click()
    expect(page.get_by_label("Upload documents")).to_have_attribute("data-testid", "upload")
    page.get_by_role("button", name="Reports").click()
    page.get_by_role("button", name="Open report example").click()
    expect(page.get_by_role("img", name="accuracy chart of report example")).to_be_visible()
    assert unnamed + unnamed_controls(page) == []
    watched.check()


def unnamed_controls(page) -> list[str]:
    """Lines of the page's accessibility tree naming a control with no accessible name."""
    tree = page.locator("body").aria_snapshot()
    controls = r"^\s*- (button|textbox|combobox|checkbox|radio|link|img|listbox|slider|progressbar)(?=[\s:\[]|$)"
    return [line for line in tree.splitlines() if re.match(controls, line) and '"' not in line]


@pytest.mark.slow
def test_default_models_answer_in_the_browser_with_an_uploaded_file_and_a_follow_up(
    browser, embedder, tmp_path: Path
) -> None:
    """The packaged default models: upload the borrowing rules, ask, follow up, open the citation, reload."""
    from playwright.sync_api import expect

    config = load_config(None, ["llm.max_new_tokens=64"])
    rules = EXAMPLES / "docs" / "borrowing-rules.txt"
    with serving(config, embedder) as url:
        watched = Watched(browser, url)
        page = watched.page
        connect(page)
        page.get_by_role("button", name="Library").click()
        page.get_by_test_id("upload").set_input_files(str(rules))
        row = page.get_by_test_id("doc").filter(has_text="borrowing-rules.txt")
        expect(row).to_contain_text("indexed", timeout=INDEXING_MS)

        page.get_by_role("button", name="Chat").click()
        ask(page, "How long can I borrow a DVD?", timeout=ANSWER_MS)
        first = page.get_by_test_id("answer").last
        expect(first.locator(".answer")).to_contain_text(re.compile(r"\b7\b|seven", re.IGNORECASE))
        first.get_by_test_id("citation").first.click()
        panel = page.get_by_test_id("citation-panel")
        expect(panel.locator("pre")).to_contain_text("DVDs and video games can be borrowed for 7 days")
        expect(panel.locator("mark").first).to_contain_text("7 days")
        expect(panel.locator("code")).to_have_text("borrowing-rules.txt")
        screenshot(page, tmp_path / "default-models-citation.png")
        page.keyboard.press("Escape")

        # Only the first question says what "many" counts: DVDs, at most 5 of them (not the 30 items of a card).
        ask(page, "And how many can I borrow at once?", timeout=ANSWER_MS)
        expect(page.get_by_test_id("answer").last.locator(".answer")).to_contain_text(
            re.compile(r"\b5\b|five", re.IGNORECASE)
        )

        page.reload()
        page.get_by_test_id("conversation").first.get_by_role("button").first.click()
        expect(page.get_by_test_id("answer")).to_have_count(2)
        expect(page.locator(".message.user .text")).to_have_text(
            ["How long can I borrow a DVD?", "And how many can I borrow at once?"]
        )
        screenshot(page, tmp_path / "default-models-reopened.png")
        watched.check()
