"""Chunk store: SQLite tables of documents and chunks; a chunk's id is its label in the vector index."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    path TEXT PRIMARY KEY, root TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    chunks INTEGER NOT NULL, ingested_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL, ordinal INTEGER NOT NULL, locator TEXT NOT NULL,
    text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_path ON chunks(path);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Document:
    path: str
    root: str
    sha256: str
    size: int
    chunks: int
    ingested_at: float


@dataclass(frozen=True)
class StoredChunk:
    id: int
    path: str
    ordinal: int
    locator: str
    text: str


class ChunkStore:
    def __init__(self, path: Path, readonly: bool = False) -> None:
        uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        if not readonly:
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def copy_to(self, path: Path) -> ChunkStore:
        """A writable copy at `path` (SQLite's backup API: consistent even while others read)."""
        target = sqlite3.connect(path)
        self._db.backup(target)
        target.close()
        return ChunkStore(path)

    def documents(self) -> list[Document]:
        rows = self._db.execute("SELECT path, root, sha256, size, chunks, ingested_at FROM documents ORDER BY path")
        return [Document(*row) for row in rows]

    def document(self, path: str) -> Document | None:
        row = self._db.execute(
            "SELECT path, root, sha256, size, chunks, ingested_at FROM documents WHERE path = ?", (path,)
        ).fetchone()
        return Document(*row) if row else None

    def chunk_ids(self, path: str) -> list[int]:
        return [row[0] for row in self._db.execute("SELECT id FROM chunks WHERE path = ?", (path,))]

    def chunks(self, ids: list[int]) -> dict[int, StoredChunk]:
        found: dict[int, StoredChunk] = {}
        for start in range(0, len(ids), 500):  # stay under SQLite's limit on bound parameters
            batch = ids[start : start + 500]
            marks = ",".join("?" * len(batch))
            query = f"SELECT id, path, ordinal, locator, text FROM chunks WHERE id IN ({marks})"
            found.update((row[0], StoredChunk(*row)) for row in self._db.execute(query, batch))
        return found

    def live_ids(self) -> list[int]:
        return [row[0] for row in self._db.execute("SELECT id FROM chunks ORDER BY id")]

    def next_id(self) -> int:
        # Labels are never reused: a deleted label stays marked in the hnswlib graph.
        row = self._db.execute("SELECT value FROM meta WHERE key = 'next_id'").fetchone()
        return int(row[0]) if row else 0

    def remove_document(self, path: str) -> list[int]:
        ids = self.chunk_ids(path)
        self._db.execute("DELETE FROM chunks WHERE path = ?", (path,))
        self._db.execute("DELETE FROM documents WHERE path = ?", (path,))
        return ids

    def add_document(self, path: str, root: str, sha256: str, size: int, chunks: list[tuple[str, str]]) -> list[int]:
        """Store a document's (locator, text) chunks; returns their new ids."""
        first = self.next_id()
        ids = list(range(first, first + len(chunks)))
        self._db.executemany(
            "INSERT INTO chunks (id, path, ordinal, locator, text) VALUES (?, ?, ?, ?, ?)",
            [(i, path, n, loc, text) for n, (i, (loc, text)) in enumerate(zip(ids, chunks))],
        )
        self._db.execute(
            "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?, ?)",
            (path, root, sha256, size, len(chunks), time.time()),
        )
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('next_id', ?)", (str(first + len(chunks)),))
        return ids

    def commit(self) -> None:
        self._db.commit()

    def chunk_count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
