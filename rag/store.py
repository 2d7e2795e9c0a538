"""Chunk store: SQLite tables of documents and chunks, and their lexical index (FTS5) in the same file.

A chunk's id is its label in the vector index and its rowid in the lexical index. The lexical index is
an FTS5 table over the chunks table's own columns (external content), so the words are stored once and
the index travels inside chunks.sqlite: hashed by the manifest and published with the vectors.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rag.chunk import with_context
from rag.lexical import quoted

# Words are split on anything but letters and digits, folded to lower case and ASCII, and stemmed;
# a code such as XK-42.7 becomes the tokens xk 42 7, which a quoted query matches as that sequence.
TOKENIZER = "porter unicode61 remove_diacritics 2"
LEXICAL_TABLE = "chunks_fts"
# BM25 weights of the context column (title and headings, repeated on every chunk of a section) and
# of the chunk's own text: a word in the text counts more than one in its headings.
_BM25 = f"bm25({LEXICAL_TABLE}, 0.5, 1.0)"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    path TEXT PRIMARY KEY, root TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    chunks INTEGER NOT NULL, ingested_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL, ordinal INTEGER NOT NULL, locator TEXT NOT NULL,
    text TEXT NOT NULL, context TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS chunks_by_path ON chunks(path);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_LEXICAL_SCHEMA = (
    f"CREATE VIRTUAL TABLE {LEXICAL_TABLE} USING fts5(context, text, content='chunks', content_rowid='id', "
    f"tokenize='{TOKENIZER}')"
)

# A chunk as ingest hands it over: (locator, text) or (locator, text, context).
NewChunk = tuple[str, str] | tuple[str, str, str]


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
    text: str  # what a source shows
    context: str = ""  # title and heading path it was indexed with ("" when not contextual)

    @property
    def indexed_text(self) -> str:
        """The text embedded and scored: the context line, then the chunk."""
        return with_context(self.context, self.text)


class ChunkSource(Protocol):
    """Where a generation's chunks are read by id: its chunks.sqlite, or the engine that stores them with the
    vectors (rag/generations/milvus.py)."""

    def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        """The chunks of those `ids` that exist (a missing id is left out)."""
        ...

    def lexical_index(self) -> ChunkStore | None:
        """The store holding these chunks' lexical index, or None where this source keeps none."""
        ...

    def close(self) -> None: ...


class ChunkStore:
    def __init__(self, path: Path, readonly: bool = False) -> None:
        uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        if not readonly:
            self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(chunks)")}
        self._context_column = "context" in columns  # stores written before contextual chunks lack it
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        self._lexical = self._db.execute(query, (LEXICAL_TABLE,)).fetchone() is not None

    def close(self) -> None:
        self._db.close()

    def copy_to(self, path: Path) -> ChunkStore:
        """A writable copy at `path` (SQLite's backup API: consistent even while others read)."""
        target = sqlite3.connect(path)
        self._db.backup(target)
        target.close()
        return ChunkStore(path)

    def upgrade(self) -> bool:
        """Add what stores from earlier versions lack (the context column, the lexical index); True if any."""
        changed = False
        if not self._context_column:
            self._db.execute("ALTER TABLE chunks ADD COLUMN context TEXT NOT NULL DEFAULT ''")
            self._context_column = changed = True
        if not self._lexical:
            self._db.execute(_LEXICAL_SCHEMA)
            self._lexical = True
            # Indexes every existing chunk from the content table: no document is read or embedded again.
            self._db.execute(f"INSERT INTO {LEXICAL_TABLE}({LEXICAL_TABLE}) VALUES ('rebuild')")
            changed = True
        return changed

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

    def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        found: dict[int, StoredChunk] = {}
        context = "context" if self._context_column else "''"
        for batch, marks in _id_batches(ids):
            query = f"SELECT id, path, ordinal, locator, text, {context} FROM chunks WHERE id IN ({marks})"
            found.update((row[0], StoredChunk(*row)) for row in self._db.execute(query, batch))
        return found

    def live_ids(self) -> list[int]:
        return [row[0] for row in self._db.execute("SELECT id FROM chunks ORDER BY id")]

    def next_id(self) -> int:
        # Labels are never reused: a deleted label stays marked in the hnswlib graph.
        row = self._db.execute("SELECT value FROM meta WHERE key = 'next_id'").fetchone()
        return int(row[0]) if row else 0

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def remove_document(self, path: str) -> list[int]:
        ids = self.chunk_ids(path)
        if self.has_lexical():
            # External content: FTS5 forgets a row only when told the exact values it indexed.
            self._db.execute(
                f"INSERT INTO {LEXICAL_TABLE}({LEXICAL_TABLE}, rowid, context, text) "
                "SELECT 'delete', id, context, text FROM chunks WHERE path = ?",
                (path,),
            )
        self._db.execute("DELETE FROM chunks WHERE path = ?", (path,))
        self._db.execute("DELETE FROM documents WHERE path = ?", (path,))
        return ids

    def add_document(self, path: str, root: str, sha256: str, size: int, chunks: Sequence[NewChunk]) -> list[int]:
        """Store a document's (locator, text[, context]) chunks and index their words; returns their new ids."""
        first = self.next_id()
        ids = list(range(first, first + len(chunks)))
        rows = [(i, path, n, *_fields(chunk)) for n, (i, chunk) in enumerate(zip(ids, chunks))]
        self._db.executemany(
            "INSERT INTO chunks (id, path, ordinal, locator, text, context) VALUES (?, ?, ?, ?, ?, ?)", rows
        )
        if self.has_lexical():
            self._db.executemany(
                f"INSERT INTO {LEXICAL_TABLE}(rowid, context, text) VALUES (?, ?, ?)",
                [(row[0], row[5], row[4]) for row in rows],
            )
        self._db.execute(
            "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?, ?)",
            (path, root, sha256, size, len(chunks), time.time()),
        )
        self.set_meta("next_id", str(first + len(chunks)))
        return ids

    def commit(self) -> None:
        self._db.commit()

    def chunk_count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    def has_lexical(self) -> bool:
        return self._lexical

    def lexical_index(self) -> ChunkStore:
        # The lexical index lives in this file (one written by an earlier version lacks it: its manifest says so).
        return self

    def lexical_rows(self) -> int:
        """Chunks the lexical index holds (its per-row size table has one row per indexed chunk)."""
        return self._db.execute(f"SELECT COUNT(*) FROM {LEXICAL_TABLE}_docsize").fetchone()[0]

    def term_counts(self, terms: list[str]) -> dict[str, int]:
        """Chunks matching each term (each quoted as one phrase): a cheap walk of one term's list each."""
        query = f"SELECT COUNT(*) FROM {LEXICAL_TABLE} WHERE {LEXICAL_TABLE} MATCH ?"
        return {term: self._db.execute(query, (quoted(term),)).fetchone()[0] for term in terms}

    def search_lexical(
        self, expression: str, limit: int, among: Sequence[int] | None = None
    ) -> list[tuple[int, float]]:
        """(chunk id, BM25 score) of the best `limit` matches of an FTS5 expression (only `among` these ids
        when given); higher is better."""
        query = f"SELECT rowid, {_BM25} FROM {LEXICAL_TABLE} WHERE {LEXICAL_TABLE} MATCH ?"
        if among is None:
            rows = self._db.execute(f"{query} ORDER BY {_BM25} LIMIT ?", (expression, limit)).fetchall()
        else:
            rows = []
            for batch, marks in _id_batches(among):
                rows += self._db.execute(f"{query} AND rowid IN ({marks})", (expression, *batch)).fetchall()
            rows = sorted(rows, key=lambda row: row[1])[:limit]
        # SQLite's bm25() is negative, lower for better matches: flipped so every stage's score rises.
        return [(int(row[0]), -float(row[1])) for row in rows]


def _id_batches(ids: Sequence[int], size: int = 500) -> Iterator[tuple[list[int], str]]:
    """`ids` in slices small enough for SQLite's limit on bound parameters, each with its `?,?,...` marks."""
    for start in range(0, len(ids), size):
        batch = list(ids[start : start + size])
        yield batch, ",".join("?" * len(batch))


def _fields(chunk: NewChunk) -> tuple[str, str, str]:
    return (chunk[0], chunk[1], chunk[2] if len(chunk) > 2 else "")  # type: ignore[misc]


def lexical_section(store: ChunkStore) -> dict[str, object]:
    """The manifest's record of the lexical index, checked against the file on every open."""
    return {"table": LEXICAL_TABLE, "tokenizer": TOKENIZER, "rows": store.lexical_rows()}


def lexical_problem(store: ChunkStore, section: object, generation: str, chunks: int) -> str | None:
    """What makes the lexical index unusable with these vectors and chunks, or None when it is in step."""
    if not isinstance(section, dict) or type(section.get("rows")) is not int:
        return "the manifest's lexical section is malformed"
    if section.get("tokenizer") != TOKENIZER or section.get("table") != LEXICAL_TABLE:
        return f"its lexical index was built with tokenizer {section.get('tokenizer')!r}, not {TOKENIZER!r}"
    if not store.has_lexical():
        return "chunks.sqlite lacks the lexical index its manifest records"
    marker = store.meta("generation")
    if marker != generation:
        return f"chunks.sqlite was written for generation {marker!r}, not {generation}"
    rows = store.lexical_rows()
    if not rows == section["rows"] == chunks:
        return f"the lexical index ({rows} rows), manifest ({section['rows']}) and chunks ({chunks}) disagree"
    return None
