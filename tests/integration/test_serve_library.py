"""The document library, PDF page images and compare reports over HTTP, against a real server on loopback."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.config import load_config
from models.generate import load_language_model
from models.paths import index_dir
from rag.collection import expectation, open_snapshot
from rag.ingest import ingest
from ragtune.serve import library as library_module
from ragtune.serve.background import running
from ragtune.serve.documents import document_id
from ragtune.serve.engine import Engine
from ragtune.serve.library import Library
from ragtune.serve.library_routes import library_router, reports_router
from ragtune.serve.routes import create_app
from tests.conftest import REPO
from tests.docmaker import make_pdf

KEY = "library-key-" + "x" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}
PARKING = (
    "Parking. Visitors may park bicycles in the covered rack beside the north entrance. "
    "Car parking is free for two hours in the lot behind the main branch; a permit is needed after that."
)
LOCKERS = ["Lockers near the entrance take a one dollar coin.", "The coin comes back when the locker is opened."]
SILENCE = ["The reading room on floor two is silent after six in the evening.", "Phones must be switched off there."]


@dataclass
class Served:
    url: str
    library: Library
    engine: Engine
    http: httpx.Client


def library_config(tiny_lm_path: Path, tmp_path: Path, *overrides: str):
    return load_config(
        None,
        [
            f"llm.model={tiny_lm_path}",
            "llm.dtype=float32",
            "llm.device=cpu",
            "llm.max_new_tokens=8",
            f"serve.reports_dir={tmp_path / 'reports'}",
            *overrides,
        ],
    )


@contextmanager
def serving(config, embedder, lm=None) -> Iterator[Served]:
    """The app with the library and reports routes, its worker started as `ragtune serve` starts it."""
    engine = Engine(config, embedder=embedder, lm=lm or load_language_model(config.llm, progress=False))
    library = Library(config, embedder)
    app = create_app(engine, KEY, extra_routers=[library_router(library, engine), reports_router(config)])
    app.router.on_startup.append(library.start)
    app.router.on_shutdown.append(library.stop)
    with running(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
        yield Served(url, library, engine, http)


@pytest.fixture
def served(tiny_lm_path: Path, tmp_path: Path, embedder) -> Iterator[Served]:
    with serving(library_config(tiny_lm_path, tmp_path), embedder) as server:
        yield server


def upload(http: httpx.Client, name: str, data: bytes) -> httpx.Response:
    return http.post("/v1/library", files={"file": (name, data, "application/octet-stream")})


def listing(http: httpx.Client) -> dict[str, dict[str, Any]]:
    reply = http.get("/v1/library")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["object"] == "list"
    return {d["name"]: d for d in body["data"]}


def wait_state(http: httpx.Client, name: str, *states: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = listing(http).get(name)
        if found is not None and found["state"] in states:
            return found
        assert time.monotonic() < deadline, f"{name} is {found and found['state']}, not {states}, after {timeout} s"
        time.sleep(0.1)


def ask(http: httpx.Client, question: str) -> dict[str, Any]:
    body = {"model": "rag", "messages": [{"role": "user", "content": question}], "max_tokens": 8}
    reply = http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()


def source_names(reply: dict[str, Any]) -> set[str]:
    return {Path(s["path"]).name for s in reply["sources"]}


def pdf(tmp_path: Path, pages: list[list[str]]) -> bytes:
    return make_pdf(tmp_path / "made.pdf", pages).read_bytes()


def test_upload_index_ask_and_delete(served: Served, tmp_path: Path) -> None:
    http = served.http
    reply = upload(http, "parking.txt", PARKING.encode())
    assert reply.status_code == 200, reply.text
    shown = reply.json()
    assert shown["object"] == "document" and shown["name"] == "parking.txt" and shown["state"] == "queued"
    assert shown["bytes"] == len(PARKING.encode()) and shown["deletable"] is True
    assert shown["id"] == document_id(str(served.library.root / "parking.txt"))
    assert upload(http, "lockers.pdf", pdf(tmp_path, [LOCKERS, SILENCE])).status_code == 200
    parking = wait_state(http, "parking.txt", "indexed")
    lockers = wait_state(http, "lockers.pdf", "indexed")
    assert parking["chunks"] >= 1 and parking["progress"] == 1.0 and parking["detail"] is None
    assert lockers["chunks"] >= 2  # one per page at least
    assert list(listing(http)) == ["lockers.pdf", "parking.txt"]  # sorted by name
    assert "parking.txt" in source_names(ask(http, "Where can visitors park their bicycles?"))
    # Deleted: gone from the list at once, and from retrieval once the worker's next run has published.
    deleted = http.delete(f"/v1/library/{parking['id']}")
    assert deleted.json() == {"id": parking["id"], "object": "document.deleted", "deleted": True}
    assert "parking.txt" not in listing(http)
    deadline = time.monotonic() + 120
    while "parking.txt" in source_names(ask(http, "Where can visitors park their bicycles?")):
        assert time.monotonic() < deadline, "the deleted document is still retrieved"
        time.sleep(0.2)
    again = http.delete(f"/v1/library/{parking['id']}")
    assert again.status_code == 404 and again.json()["error"]["code"] == "document_not_found"


def test_a_new_upload_of_a_name_replaces_it(served: Served) -> None:
    http = served.http
    upload(http, "notes.txt", b"The first version talks about gardening and tomatoes.")
    first = wait_state(http, "notes.txt", "indexed")
    upload(http, "notes.txt", PARKING.encode())
    second = wait_state(http, "notes.txt", "indexed")
    assert second["id"] == first["id"] and second["bytes"] == len(PARKING.encode())
    snapshot = open_snapshot(
        index_dir(served.engine.config), expectation(served.engine.config, served.library.embedder.dim)
    )
    try:
        texts = [c.text for c in snapshot.store.chunks(list(range(snapshot.store.next_id()))).values()]
    finally:
        snapshot.close()
    assert any("bicycles" in t for t in texts) and not any("tomatoes" in t for t in texts)


def test_a_damaged_pdf_is_skipped_with_its_reason_and_the_rest_indexed(served: Served) -> None:
    http = served.http
    upload(http, "broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R >>\nthis is not a pdf at all\n")
    upload(http, "parking.txt", PARKING.encode())
    broken = wait_state(http, "broken.pdf", "skipped", "indexed", "failed")
    assert broken["state"] == "skipped" and broken["detail"] and broken["chunks"] is None
    assert "/" not in broken["detail"]  # the reason, not where the server keeps the file
    assert wait_state(http, "parking.txt", "indexed")["chunks"] >= 1


def test_ingest_limits_show_as_skipped(tiny_lm_path: Path, tmp_path: Path, embedder) -> None:
    with serving(library_config(tiny_lm_path, tmp_path, "rag.max_file_mb=0.0001"), embedder) as server:
        upload(server.http, "parking.txt", PARKING.encode() * 2)
        skipped = wait_state(server.http, "parking.txt", "skipped", "indexed")
        assert skipped["state"] == "skipped" and "rag.max_file_mb" in skipped["detail"]


def test_answering_is_not_blocked_by_an_ingest(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    http = served.http
    upload(http, "parking.txt", PARKING.encode())
    wait_state(http, "parking.txt", "indexed")
    release, progress = threading.Event(), []
    real = library_module.ingest

    def held_ingest(*args: Any, **kwargs: Any):
        assert release.wait(120), "the test never released the ingest"
        inner = kwargs["on_progress"]
        kwargs["on_progress"] = lambda *report: (progress.append(report), inner(*report))
        return real(*args, **kwargs)

    monkeypatch.setattr(library_module, "ingest", held_ingest)
    upload(http, "lockers.txt", " ".join(LOCKERS).encode())
    wait_state(http, "lockers.txt", "indexing")
    started = time.monotonic()
    assert "parking.txt" in source_names(ask(http, "Where can visitors park their bicycles?"))
    assert time.monotonic() - started < 30
    assert listing(http)["lockers.txt"]["state"] == "indexing"  # the answer did not wait for the ingest
    release.set()
    assert wait_state(http, "lockers.txt", "indexed")["progress"] == 1.0
    path = str(served.library.root / "lockers.txt")
    assert progress and progress[-1][0] == path and progress[-1][1] == progress[-1][2] >= 1


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("notes.exe", "unsupported_file"),
        ("noext", "unsupported_file"),
        ("../escape.txt", "invalid_file_name"),
        ("sub/dir.txt", "invalid_file_name"),
        ("back\\slash.txt", "invalid_file_name"),
        (".hidden.txt", "invalid_file_name"),
        ("x" * 250 + "é.txt", "invalid_file_name"),  # 255 characters, 256 bytes
    ],
)
def test_bad_names_are_refused(served: Served, name: str, code: str) -> None:
    reply = upload(served.http, name, b"some text")
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == code, error
    if code == "unsupported_file":
        assert ".pdf" in error["message"] and ".txt" in error["message"]
    assert listing(served.http) == {} and [p.name for p in served.library.root.iterdir()] == []


def test_malformed_and_oversized_uploads(tiny_lm_path: Path, tmp_path: Path, embedder) -> None:
    with serving(library_config(tiny_lm_path, tmp_path, "serve.max_upload_bytes=20000"), embedder) as server:
        http = server.http
        big = upload(http, "big.txt", b"a" * 200_000)
        assert big.status_code == 413 and big.json()["error"]["code"] == "file_too_large"
        just = upload(http, "just.txt", b"b" * 20_001)
        assert just.status_code == 413
        assert http.post("/v1/library", json={"file": "x"}).status_code == 400
        missing = http.post("/v1/library", files={"other": ("a.txt", b"x")})
        assert missing.status_code == 400 and "file" in missing.json()["error"]["message"]
        assert httpx.post(f"{server.url}/v1/library", files={"file": ("a.txt", b"x")}).status_code == 401
        assert listing(http) == {} and not [p for p in server.library.root.iterdir()]
        assert upload(http, "fits.txt", b"c " * 9_000).status_code == 200


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_pdf_pages_as_images(served: Served, tmp_path: Path) -> None:
    import pypdfium2 as pdfium

    http = served.http
    upload(http, "lockers.pdf", pdf(tmp_path, [LOCKERS, SILENCE]))
    upload(http, "parking.txt", PARKING.encode())
    lockers = wait_state(http, "lockers.pdf", "indexed")
    parking = wait_state(http, "parking.txt", "indexed")
    pages = []
    for number in (1, 2):
        reply = http.get(f"/v1/documents/{lockers['id']}/pages/{number}")
        assert reply.status_code == 200 and reply.headers["content-type"] == "image/png"
        width, height = png_size(reply.content)
        assert 900 <= width <= 1000 and height > width  # a portrait letter page
        pages.append(reply.content)
    assert pages[0] != pages[1]
    # The right page: its image is PDFium's own rendering of that page (the same pixels).
    from PIL import Image

    document = pdfium.PdfDocument(tmp_path / "made.pdf")
    for number, data in enumerate(pages):
        shown = Image.open(BytesIO(data)).convert("L")
        other = Image.open(BytesIO(pages[1 - number])).convert("L")
        page = document[number]
        own = page.render(scale=shown.width / page.get_width()).to_pil().convert("L").resize(shown.size)
        assert diff(own, shown) < diff(own, other)
    document.close()
    for bad in (0, 3, -1):
        missing = http.get(f"/v1/documents/{lockers['id']}/pages/{bad}")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "page_not_found"
    not_pdf = http.get(f"/v1/documents/{parking['id']}/pages/1")
    assert not_pdf.status_code == 400 and not_pdf.json()["error"]["code"] == "not_a_pdf"
    for unknown in ("doc-" + "0" * 24, "..%2F..%2Fetc%2Fpasswd", str(served.library.root / "lockers.pdf")):
        reply = http.get(f"/v1/documents/{unknown}/pages/1")
        assert reply.status_code == 404, (unknown, reply.text)
    assert http.get(f"/v1/documents/{lockers['id']}/pages/one").status_code == 400


def diff(a, b) -> float:
    from PIL import ImageChops, ImageStat

    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean)


def test_documents_indexed_elsewhere_are_listed_not_deletable(
    tiny_lm_path: Path, tmp_path: Path, embedder, docs: Path
) -> None:
    config = library_config(tiny_lm_path, tmp_path)
    ingest([docs], config, embedder, progress=False)
    with serving(config, embedder) as server:
        shown = listing(server.http)
        assert "borrowing-rules.txt" in shown and all(d["deletable"] is False for d in shown.values())
        rules = shown["borrowing-rules.txt"]
        assert rules["state"] == "indexed" and rules["chunks"] >= 1
        refused = server.http.delete(f"/v1/library/{rules['id']}")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "document_not_deletable"
        pdf_doc = shown["printing-and-wifi.pdf"]
        assert server.http.get(f"/v1/documents/{pdf_doc['id']}/pages/1").status_code == 200
        # The library's own runs leave the other folder's documents in the index.
        upload(server.http, "parking.txt", PARKING.encode())
        wait_state(server.http, "parking.txt", "indexed")
        assert set(shown) < set(listing(server.http))


def test_library_state_survives_a_restart(tiny_lm_path: Path, tmp_path: Path, embedder) -> None:
    config = library_config(tiny_lm_path, tmp_path)
    lm = load_language_model(config.llm, progress=False)
    with serving(config, embedder, lm) as server:
        upload(server.http, "parking.txt", PARKING.encode())
        upload(server.http, "broken.pdf", b"%PDF-1.4 nothing else")
        before = wait_state(server.http, "parking.txt", "indexed")
        wait_state(server.http, "broken.pdf", "skipped")
    # Put in the folder while the server was down: queued at start, then indexed.
    (server.library.root / "lockers.txt").write_text(" ".join(LOCKERS))
    library = Library(config, embedder)
    assert library.document("parking.txt")["state"] == "indexed"
    assert library.document("parking.txt")["chunks"] == before["chunks"]
    assert library.document("lockers.txt")["state"] == "queued"
    with serving(config, embedder, lm) as server:
        assert listing(server.http)["parking.txt"] == before
        wait_state(server.http, "lockers.txt", "indexed")
        assert wait_state(server.http, "broken.pdf", "skipped")["detail"]
        assert "lockers.txt" in source_names(ask(server.http, "What do the lockers near the entrance take?"))


# -- reports ------------------------------------------------------------------------------------------------
def make_reports(root: Path) -> None:
    shutil.copytree(REPO / "reports" / "example", root / "example")
    (root / "broken").mkdir()
    (root / "broken" / "results.json").write_text("{not json")
    (root / "notes").mkdir()  # no results.json: not a report
    (root / ".hidden").mkdir()
    (root / ".hidden" / "results.json").write_text("{}")
    (root / "loose.json").write_text("{}")


def test_reports_are_listed_shown_and_charts_served(served: Served, tmp_path: Path) -> None:
    make_reports(tmp_path / "reports")
    http = served.http
    reports = {r["id"]: r for r in http.get("/v1/reports").json()["data"]}
    assert set(reports) == {"example", "broken"}
    example = reports["example"]
    assert example["object"] == "report" and example["verdict"].startswith("On these 6 questions")
    assert set(example["paths"]) == {"base", "rag", "finetune", "hybrid"} and example["created"] > 0
    assert "error" not in example and reports["broken"]["error"] and reports["broken"]["verdict"] is None
    shown = http.get("/v1/reports/example").json()
    assert shown["verdict"] == example["verdict"] and shown["markdown"].startswith("#")
    assert shown["results"]["primary_metric"] == "contains" and "accuracy.png" in shown["charts"]
    chart = http.get("/v1/reports/example/charts/accuracy.png")
    assert chart.status_code == 200 and chart.headers["content-type"] == "image/png"
    assert chart.content == (tmp_path / "reports" / "example" / "accuracy.png").read_bytes()
    assert http.get("/v1/reports/broken").json()["error"]
    for path in (
        "/v1/reports/notes",
        "/v1/reports/.hidden",
        "/v1/reports/..%2F..%2Fetc",
        "/v1/reports/example/charts/missing.png",
        "/v1/reports/example/charts/..%2Fexample%2Faccuracy.png",
        "/v1/reports/example/charts/%2E%2E.png",
        "/v1/reports/..%2Freports%2Fexample/charts/accuracy.png",
    ):
        reply = http.get(path)
        assert reply.status_code == 404, (path, reply.text)
    assert httpx.get(f"{served.url}/v1/reports").status_code == 401


def test_no_reports_folder_is_an_empty_list(served: Served) -> None:
    assert served.http.get("/v1/reports").json() == {"object": "list", "data": []}
