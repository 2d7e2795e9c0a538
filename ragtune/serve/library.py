"""The document library: uploaded files in one folder, indexed by one background worker as `ragtune ingest` would.

Each upload is written into a hidden staging folder and renamed into the library folder in one step, so a crash
never leaves half a file where ingest would read it. One worker thread runs `rag.ingest.ingest` over the folder
whenever something changed (a burst of changes gives one run); answering never waits for it, the retriever
picks up the new generation at its next question. Each file's state (queued, indexing, indexed, skipped,
failed) is kept in memory and rebuilt at start from the folder and the index: whatever is not indexed yet is
queued again.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from models.config import Config
from models.embedding import Embedder
from models.errors import IndexLockedError, IndexStateError
from models.paths import data_home, index_dir
from models.storage import fsync_dir, remove_stale_staging, staged_dir
from rag.collection import STORE_FILE, current_generation
from rag.ingest import ingest
from rag.loaders import READERS
from rag.store import ChunkStore, Document
from ragtune.serve.documents import document_id, shown_path
from ragtune.serve.errors import ApiError, public
from ragtune.serve.schemas import quoted
from ragtune.serve.uploads import upload_admission

SETTLE_S = 0.5  # an ingest starts once this long has passed without a change, so a burst of uploads is one run
MAX_SETTLE_S = 5.0  # ... or this long after the first change, so a steady stream of uploads still gets indexed
RETRY_S = 5.0  # wait before trying again when another process (`ragtune ingest`) is writing the index
MAX_NAME_BYTES = 255  # what most file systems allow in one name


@dataclass
class Entry:
    """What the library knows about one of its files."""

    state: str = "queued"  # queued, indexing, indexed, skipped or failed
    progress: float | None = None
    detail: str | None = None  # why skipped or failed
    chunks: int | None = None
    version: int = 0  # bumped by every upload of the name: a run that read an older version does not settle it


def library_root(config: Config) -> Path:
    """serve.library_dir, or $RAGTUNE_HOME/library; resolved, as ingest keys documents by resolved path."""
    folder = Path(config.serve.library_dir).expanduser() if config.serve.library_dir else data_home() / "library"
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve()


def supported_suffixes() -> str:
    return " ".join(sorted(READERS))


def check_name(name: str) -> str:
    """`name` if it can be a library file's name; 400 naming the problem otherwise."""

    def refuse(why: str, code: str = "invalid_file_name") -> ApiError:
        return ApiError(400, f"file: the name {quoted(name)} {why}", code=code, param="file")

    if not name:
        raise refuse("is empty; send the file with its name")
    if "/" in name or "\\" in name:
        raise refuse("holds a path separator; send the file's name alone")
    if name.startswith("."):
        raise refuse("starts with '.', which marks a hidden file; rename the file")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise refuse("holds a control character; rename the file")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise refuse("is not valid UTF-8; rename the file") from None
    if size > MAX_NAME_BYTES:
        raise refuse(f"is {size} bytes long, over {MAX_NAME_BYTES}; rename the file")
    if Path(name).suffix.lower() not in READERS:
        raise refuse(f"is not a type ingest reads; send one of {supported_suffixes()}", "unsupported_file")
    return name


class Library:
    """The library folder, its files' states and the worker that indexes them; every method is thread-safe."""

    def __init__(self, config: Config, embedder: Embedder) -> None:
        self.config, self.embedder = config, embedder
        self.root = library_root(config)
        self.index_root = index_dir(config)
        self._lock = threading.Condition()  # guards everything below; notified on a change and on stop
        self._entries: dict[str, Entry] = {}
        self._changes = 0  # uploads and deletes so far: the worker waits until it stops moving
        self._dirty = False  # a change the index does not reflect yet
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._indexed: tuple[str | None, dict[str, Document]] = (None, {})  # per generation
        self.uploads = upload_admission(config.serve.max_concurrent_uploads)
        remove_stale_staging(self.root)  # uploads cut off by a crash
        self._recover()

    # -- lifecycle (the server's startup and shutdown hooks) ---------------------------------------
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="ragtune-library", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        """Stop the worker; an ingest under way finishes first (or is cut off with the process, harmlessly)."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def idle(self) -> bool:
        """Nothing queued or indexing (what tests and a shutdown may wait for)."""
        with self._lock:
            return not self._dirty and all(e.state not in ("queued", "indexing") for e in self._entries.values())

    # -- what is there ------------------------------------------------------------------------------
    def files(self) -> dict[str, os.stat_result]:
        """The library's files by name: plain files only, hidden ones (staging folders) left out."""
        found: dict[str, os.stat_result] = {}
        self.root.mkdir(parents=True, exist_ok=True)  # removed by hand while serving: an empty library
        with os.scandir(self.root) as entries:
            for entry in entries:
                if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False):
                    found[entry.name] = entry.stat(follow_symlinks=False)
        return found

    def indexed(self) -> dict[str, Document]:
        """The documents of the index's current generation by path (none while there is no readable index)."""
        try:
            generation = current_generation(self.index_root)
        except IndexStateError:
            return {}
        if generation is None:
            return {}
        cached, documents = self._indexed
        if cached != generation:
            try:
                store = ChunkStore(self.index_root / generation / STORE_FILE, readonly=True)
                try:
                    documents = {doc.path: doc for doc in store.documents()}
                finally:
                    store.close()
            except sqlite3.Error:  # pruned by a newer ingest meanwhile, or damaged: the next call looks again
                return {}
            self._indexed = (generation, documents)
        return documents

    def documents(self) -> list[dict[str, Any]]:
        """Every library file with its state, then the documents indexed from other folders; sorted by name."""
        indexed = self.indexed()
        with self._lock:
            files = self.files()
            listed = [self._document(name, stat) for name, stat in files.items()]
        mine = {str(self.root / name) for name in files}
        for path, doc in indexed.items():
            if path not in mine and not Path(path).is_relative_to(self.root):
                listed.append(foreign(doc))
        return sorted(listed, key=lambda d: d["name"])

    def document(self, name: str) -> dict[str, Any]:
        with self._lock:
            return self._document(name, (self.root / name).stat())

    def _document(self, name: str, stat: os.stat_result) -> dict[str, Any]:
        entry = self._entries.get(name)
        if entry is None:  # put into the folder by other means: the folder is the truth, index it
            entry = self._entries[name] = Entry()
            self._changed()
        return {
            "id": document_id(str(self.root / name)),
            "object": "document",
            "name": shown(name),
            "bytes": stat.st_size,
            "state": entry.state,
            "progress": entry.progress,
            "detail": entry.detail,
            "chunks": entry.chunks,
            "deletable": True,
            "updated": int(stat.st_mtime),
        }

    # -- changes ------------------------------------------------------------------------------------
    def store(self, source: BinaryIO, name: str) -> dict[str, Any]:
        """Write an upload under `name` (replacing a file of that name) and queue it for indexing."""
        check_name(name)
        with staged_dir(self.root, "upload") as staging:
            part = staging / name
            with open(part, "wb") as handle:
                shutil.copyfileobj(source, handle)
                handle.flush()
                os.fsync(handle.fileno())
            with self._lock:
                os.replace(part, self.root / name)  # the whole file appears in one step, or nothing does
                fsync_dir(self.root)
                entry = self._entries.setdefault(name, Entry())
                entry.version += 1
                entry.state, entry.progress, entry.detail, entry.chunks = "queued", None, None, None
                self._changed()
                shown_document = self._document(name, (self.root / name).stat())
        shutil.rmtree(staging, ignore_errors=True)
        return shown_document

    def delete(self, doc_id: str) -> dict[str, Any]:
        """Remove a library file; its chunks leave the index at the next run. 404 unknown, 403 not a library file."""
        with self._lock:
            name = next((n for n in self.files() if document_id(str(self.root / n)) == doc_id), None)
            if name is not None:
                (self.root / name).unlink()
                fsync_dir(self.root)
                self._entries.pop(name, None)
                self._changed()
                return {"id": doc_id, "object": "document.deleted", "deleted": True}
        if any(document_id(path) == doc_id for path in self.indexed()):
            raise ApiError(
                403,
                f"document {quoted(doc_id)} was indexed from a folder outside the library (by `ragtune ingest`); "
                "remove it with `ragtune docs remove` on the server",
                code="document_not_deletable",
            )
        raise ApiError(
            404, f"no document with id {quoted(doc_id)}; GET /v1/library lists them", code="document_not_found"
        )

    def _changed(self) -> None:
        self._changes += 1
        self._dirty = True
        self._lock.notify_all()

    # -- the worker ---------------------------------------------------------------------------------
    def _recover(self) -> None:
        """States after a restart: a file whose very version is in the index is indexed; the rest is queued."""
        indexed = self.indexed()
        for name, stat in self.files().items():
            doc = indexed.get(str(self.root / name))
            # A file replaced after its ingest is newer than it: its mtime is later than the ingest's time.
            if doc is not None and doc.size == stat.st_size and stat.st_mtime <= doc.ingested_at:
                self._entries[name] = Entry("indexed", 1.0, None, doc.chunks)
            else:
                self._entries[name] = Entry()
        # One run at start when the library has files or the index has documents from it: it indexes what is
        # queued, finds the skips again, drops the documents of files deleted while the server was down, and
        # publishes nothing when nothing changed. An empty library never makes an (empty) index of its own: a
        # server with no documents keeps answering "no index" until something is ingested.
        from_library = any(Path(path).is_relative_to(self.root) for path in indexed)
        self._dirty = bool(self._entries) or from_library

    def _work(self) -> None:
        while self._settled():
            with self._lock:
                self._dirty = False
                versions = {name: entry.version for name, entry in self._entries.items()}
                for entry in self._entries.values():
                    if entry.state == "queued":
                        entry.state, entry.progress = "indexing", 0.0
            try:
                summary = ingest([self.root], self.config, self.embedder, progress=False, on_progress=self._progress)
            except IndexLockedError:  # `ragtune ingest` is writing the same index: try again shortly
                self._requeue()
                continue
            except Exception as exc:  # noqa: BLE001 - one failed run must not end the worker; each file says why
                print(f"ragtune: indexing the library failed: {exc!r}", file=sys.stderr)
                self._fail(versions, public(str(exc)) or type(exc).__name__)
                continue
            self._settle_states(versions, dict(summary.skipped))

    def _settled(self) -> bool:
        """Wait for a change, then for the changes to stop for SETTLE_S; False once the library is stopping."""
        with self._lock:
            while not self._dirty and not self._stopping:
                self._lock.wait()
            first = time.monotonic()
            while not self._stopping and time.monotonic() - first < MAX_SETTLE_S:
                seen = self._changes
                self._lock.wait(SETTLE_S)
                if self._changes == seen:
                    break
            return not self._stopping

    def _progress(self, path: str, done: int, total: int) -> None:
        name = Path(path).name
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and entry.state == "indexing" and Path(path).parent == self.root:
                entry.progress = done / total if total else 1.0

    def _requeue(self) -> None:
        with self._lock:
            for entry in self._entries.values():
                if entry.state == "indexing":
                    entry.state, entry.progress = "queued", None
            self._dirty = True
            self._lock.wait(RETRY_S)

    def _fail(self, versions: dict[str, int], why: str) -> None:
        with self._lock:
            for name, entry in self._entries.items():
                if entry.state == "indexing" and versions.get(name) == entry.version:
                    entry.state, entry.progress, entry.detail = "failed", None, why
                elif entry.state == "indexing":
                    entry.state, entry.progress = "queued", None

    def _settle_states(self, versions: dict[str, int], skipped: dict[str, str]) -> None:
        """Each file's state from the run's skips and the index it published; newer uploads stay queued."""
        indexed = self.indexed()
        with self._lock:
            files = self.files()
            for name in [n for n in self._entries if n not in files]:  # removed by hand meanwhile
                del self._entries[name]
            for name, entry in self._entries.items():
                if versions.get(name) != entry.version:
                    entry.state, entry.progress = "queued", None  # uploaded again meanwhile: the next run reads it
                    continue
                path = str(self.root / name)
                doc = indexed.get(path)
                if path in skipped:
                    entry.state, entry.progress, entry.detail, entry.chunks = "skipped", None, skipped[path], None
                elif doc is not None:
                    entry.state, entry.progress, entry.detail, entry.chunks = "indexed", 1.0, None, doc.chunks
                elif entry.state == "indexing":
                    entry.state, entry.progress = "failed", None
                    entry.detail = "the ingest did not find this file; upload it again"


def not_found(doc_id: str) -> ApiError:
    return ApiError(404, f"no document with id {quoted(doc_id)}; GET /v1/library lists them", code="document_not_found")


def shown(name: str) -> str:
    """A name fit for JSON: one put in the folder by hand may not be UTF-8 (ingest skips it, saying why)."""
    return name.encode("utf-8", "replace").decode("utf-8")


def foreign(doc: Document) -> dict[str, Any]:
    """A document indexed from another folder by `ragtune ingest`: listed, not deletable here."""
    return {
        "id": document_id(doc.path),
        "object": "document",
        "name": shown(shown_path(doc.path, doc.root)),
        "bytes": doc.size,
        "state": "indexed",
        "progress": 1.0,
        "detail": None,
        "chunks": doc.chunks,
        "deletable": False,
        "updated": int(doc.ingested_at),
    }
