"""kill -9 of the server during a library upload or its ingest leaves the library folder and the index consistent."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from models.config import load_config
from models.paths import index_dir
from rag.collection import expectation, open_snapshot
from ragtune.serve.library import Library
from tests.conftest import REPO

KEY = "crash-key-" + "x" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}
SERVER = """
import socket, sys
import uvicorn
from models.config import load_config
from models.embedders import build_embedder
from models.generate import load_language_model
from ragtune.serve.engine import Engine
from ragtune.serve.guard import uvicorn_options
from ragtune.serve.library import Library
from ragtune.serve.library_routes import library_router, reports_router
from ragtune.serve.routes import create_app
config = load_config(None, sys.argv[2:])
embedder = build_embedder(config.embedder)
engine = Engine(config, embedder=embedder, lm=load_language_model(config.llm, progress=False))
library = Library(config, embedder)
app = create_app(engine, sys.argv[1], extra_routers=[library_router(library, engine), reports_router(config)])
app.router.on_startup.append(library.start)
app.router.on_shutdown.append(library.stop)
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(app, lifespan="on", **uvicorn_options(config.serve))).run(sockets=[sock])
"""


def overrides(tiny_lm_path: Path) -> list[str]:
    # rag.max_file_mb=0.5: the large uploads are refused by ingest at once (skipped, unread), keeping runs short.
    return [f"llm.model={tiny_lm_path}", "llm.dtype=float32", "llm.device=cpu", "rag.max_file_mb=0.5"]


@contextmanager
def server(tiny_lm_path: Path, home: Path, log: Path) -> Iterator[tuple[subprocess.Popen, httpx.Client]]:
    """A `ragtune serve`-like server in a child process; the caller kills it (or it is killed on the way out)."""
    env = {**os.environ, "RAGTUNE_HOME": str(home), "PYTHONPATH": str(REPO)}
    with open(log, "ab") as errors:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVER, KEY, *overrides(tiny_lm_path)],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
    try:
        port = int(process.stdout.readline() or 0)
        assert port, log.read_text()[-3000:]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=60) as http:
            deadline = time.monotonic() + 180
            while not up(http):
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.1)
            yield process, http
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def up(http: httpx.Client) -> bool:
    try:
        return http.get("/health").status_code == 200
    except httpx.TransportError:
        return False


def states(http: httpx.Client) -> dict[str, str]:
    return {d["name"]: d["state"] for d in http.get("/v1/library").json()["data"]}


def wait_until(check, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def corpus(lines: int, seed: int) -> bytes:
    notes = (
        f"Branch {i % 13} note {seed}-{i}: shelf {i * 7 % 101} keeps {i % 17} copies of volume {i}."
        for i in range(lines)
    )
    return " ".join(notes).encode()


def check_consistent(library: Library, sent: dict[str, bytes], config, dim: int) -> None:
    """Every file in the library is whole (one version that was sent), nothing half-written is left, and the index
    holds exactly the library's indexed files, at their present content."""
    root = library.root
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]  # staging leftovers removed at start
    digests = {name: {hashlib.sha256(data).hexdigest()} for name, data in sent.items()}
    for path in root.iterdir():
        assert hashlib.sha256(path.read_bytes()).hexdigest() in digests[path.name], path.name
    library.start()
    try:
        wait_until(library.idle)
    finally:
        library.stop()
    shown = {d["name"]: d for d in library.documents()}
    snapshot = open_snapshot(index_dir(config), expectation(config, dim))  # verifies sizes, hashes and counts
    try:
        indexed = {Path(doc.path).name: doc for doc in snapshot.store.documents()}
    finally:
        snapshot.close()
    assert set(shown) == {p.name for p in root.iterdir()}
    assert {name for name, d in shown.items() if d["state"] == "indexed"} == set(indexed)
    for name, doc in indexed.items():
        assert doc.sha256 == hashlib.sha256((root / name).read_bytes()).hexdigest()
        assert shown[name]["chunks"] == doc.chunks
    assert all(d["state"] in ("indexed", "skipped") for d in shown.values()), shown


@pytest.mark.slow
def test_kill_9_during_uploads_leaves_whole_files_or_none(
    tiny_lm_path: Path, ragtune_home: Path, tmp_path: Path, embedder
) -> None:
    small = corpus(40, 0)
    versions = []
    for attempt, delay in enumerate((0.02, 0.15, 0.6)):
        with server(tiny_lm_path, ragtune_home, tmp_path / "server.log") as (process, http):
            if attempt == 0:
                assert http.post("/v1/library", files={"file": ("small.txt", small)}).status_code == 200
                wait_until(lambda: states(http).get("small.txt") == "indexed")
            # An upload (replacing the previous one of the same name), killed while read, written or done.
            versions.append(os.urandom(1024) * 900 + bytes([attempt]))
            posting = threading.Thread(target=post_quietly, args=(http, "big.txt", versions[-1]), daemon=True)
            posting.start()
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            process.wait()
            posting.join(timeout=60)
    config = load_config(None, overrides(tiny_lm_path))
    library = Library(config, embedder)
    sent = {"small.txt": small}
    if (library.root / "big.txt").exists():  # then whole: exactly one of the versions sent
        sent["big.txt"] = next((v for v in versions if v == (library.root / "big.txt").read_bytes()), b"")
    check_consistent(library, sent, config, embedder.dim)
    assert {d["name"]: d["state"] for d in library.documents()}["small.txt"] == "indexed"


def post_quietly(http: httpx.Client, name: str, data: bytes) -> None:
    try:
        http.post("/v1/library", files={"file": (name, data)})
    except httpx.TransportError:
        pass  # the server was killed under it: the point of the test


@pytest.mark.slow
def test_kill_9_during_an_ingest_requeues_the_document(
    tiny_lm_path: Path, ragtune_home: Path, tmp_path: Path, embedder
) -> None:
    first, second = corpus(40, 1), corpus(2000, 2)  # a few seconds of indexing: killed half a second in
    with server(tiny_lm_path, ragtune_home, tmp_path / "server.log") as (process, http):
        assert http.post("/v1/library", files={"file": ("first.txt", first)}).status_code == 200
        wait_until(lambda: states(http).get("first.txt") == "indexed")
        assert http.post("/v1/library", files={"file": ("second.txt", second)}).status_code == 200
        wait_until(lambda: states(http).get("second.txt") == "indexing")
        time.sleep(0.5)
        process.send_signal(signal.SIGKILL)
        process.wait()
    config = load_config(None, overrides(tiny_lm_path))
    library = Library(config, embedder)
    shown = {d["name"]: d["state"] for d in library.documents()}
    assert shown == {"first.txt": "indexed", "second.txt": "queued"}, shown  # queued again, not lost
    check_consistent(library, {"first.txt": first, "second.txt": second}, config, embedder.dim)
    assert {d["name"]: d["state"] for d in library.documents()}["second.txt"] == "indexed"
