"""Conversations the server keeps: one SQLite file ($RAGTUNE_HOME/serve/conversations.sqlite), one row per turn.

Every change is one transaction in WAL mode, so a crash (kill -9, power loss) leaves each turn stored whole or
not at all. The file is checked when it is opened: a damaged one stops the server with its name and the fix.
Every method is thread-safe (one connection, one lock); bounded by serve.max_conversations and serve.max_turns.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from models.config import ServeConfig
from models.errors import InputError, RagtuneError
from ragtune.serve.schemas import quoted

UNTITLED = "New conversation"
TITLE_FROM_QUESTION = 60  # characters of the first question that title an untitled conversation
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY, title TEXT, model TEXT, created REAL NOT NULL, updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_by_update ON conversations (updated);
CREATE TABLE IF NOT EXISTS turns (
    conversation TEXT NOT NULL, idx INTEGER NOT NULL, question TEXT NOT NULL, answer TEXT NOT NULL,
    model TEXT NOT NULL, query TEXT, sources TEXT NOT NULL, refused INTEGER, cited TEXT NOT NULL, support TEXT,
    sentences TEXT NOT NULL, timings TEXT NOT NULL, complete INTEGER NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (conversation, idx)
);
"""
_CONVERSATION = "SELECT id, title, model, created, updated, (SELECT COUNT(*) FROM turns WHERE conversation = id)"
TURN_FIELDS = ("index", "question", "answer", "model", "query", "sources", "refused", "cited", "support")
TURN_FIELDS += ("sentences", "timings", "complete", "created")
_TURN = ", ".join(TURN_FIELDS).replace("index", "idx")  # `index` is an SQL keyword
_JSON = ("sources", "cited", "sentences", "timings")  # turn fields stored as JSON text


class ConversationStoreError(RagtuneError):
    """The conversations file cannot be used: damaged, or written by a newer ragtune."""


class ConversationNotFoundError(InputError):
    """A request names a conversation id the server does not keep."""


class TooManyTurnsError(InputError):
    """A conversation already holds serve.max_turns turns."""


class TooManyConversationsError(InputError):
    """The server already keeps serve.max_conversations conversations."""


def conversations_file(home: Path) -> Path:
    return home / "serve" / "conversations.sqlite"


def title_from(question: str) -> str:
    """An untitled conversation's title: its first question on one line, cut to TITLE_FROM_QUESTION characters."""
    return " ".join(question.split())[:TITLE_FROM_QUESTION]


class ConversationStore:
    def __init__(self, path: Path, limits: ServeConfig) -> None:
        self.path, self.limits = path, limits
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open()

    def _damaged(self, detail: str) -> ConversationStoreError:
        return ConversationStoreError(
            f"{self.path} is damaged ({detail}); stop the server and move that file (with any -wal and -shm files "
            "beside it) aside: the server then starts with no conversations; or restore it from a backup"
        )

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are begun and ended here, explicitly (see _changing).
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        try:
            problems = [row[0] for row in db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise self._damaged("; ".join(problems[:3]))
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConversationStoreError(
                    f"{self.path} was written by a newer ragtune (schema {version}, this one reads "
                    f"{SCHEMA_VERSION}); upgrade ragtune, or move that file aside to start with no conversations"
                )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a stored turn survives a power loss, not only a crash
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            expected = {"conversations": 5, "turns": 14}
            for table, columns in expected.items():
                if len(db.execute(f"PRAGMA table_info({table})").fetchall()) != columns:
                    raise self._damaged(f"table {table} does not have the columns ragtune writes")
        except sqlite3.DatabaseError as exc:  # not a database at all, or a page SQLite cannot read
            db.close()
            raise self._damaged(str(exc)) from None
        except ConversationStoreError:
            db.close()
            raise
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _changing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (IMMEDIATE): its checks and its writes see the same rows."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- conversations -----------------------------------------------------------------------------
    def create(self, title: str | None = None, model: str | None = None) -> dict[str, Any]:
        with self._changing() as db:
            count, limit = db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0], self.limits.max_conversations
            if count >= limit:
                raise TooManyConversationsError(
                    f"this server already keeps {count} conversations (serve.max_conversations={limit}); "
                    "delete some (DELETE /v1/conversations/ID) to start another"
                )
            ident, now = f"conv-{uuid.uuid4().hex[:24]}", time.time()
            db.execute("INSERT INTO conversations VALUES (?, ?, ?, ?, ?)", (ident, title, model, now, now))
            return self._conversation(db, ident)

    def newest_first(self) -> list[dict[str, Any]]:
        """Every conversation, the most recently updated first."""
        with self._lock:
            rows = self._db.execute(f"{_CONVERSATION} FROM conversations ORDER BY updated DESC, created DESC, id")
            return [_conversation_json(row) for row in rows]

    def get(self, ident: str) -> dict[str, Any]:
        """The conversation and its turns, oldest first."""
        with self._lock:
            conversation = self._conversation(self._db, ident)
            rows = self._db.execute(f"SELECT {_TURN} FROM turns WHERE conversation = ? ORDER BY idx", (ident,))
            return {**conversation, "turns": [_turn_json(row) for row in rows]}

    def rename(self, ident: str, title: str) -> dict[str, Any]:
        with self._changing() as db:
            self._conversation(db, ident)
            db.execute("UPDATE conversations SET title = ?, updated = ? WHERE id = ?", (title, time.time(), ident))
            return self._conversation(db, ident)

    def delete(self, ident: str) -> dict[str, Any]:
        with self._changing() as db:
            self._conversation(db, ident)
            db.execute("DELETE FROM turns WHERE conversation = ?", (ident,))
            db.execute("DELETE FROM conversations WHERE id = ?", (ident,))
        return {"id": ident, "object": "conversation.deleted", "deleted": True}

    # -- turns -------------------------------------------------------------------------------------
    def recent(self, ident: str, count: int) -> list[tuple[str, str]]:
        """Up to `count` of the latest turns that hold an answer, oldest first, as (question, answer)."""
        with self._lock:
            self._conversation(self._db, ident)
            if count <= 0:
                return []
            query = "SELECT question, answer FROM turns WHERE conversation = ? AND answer != ''"
            rows = self._db.execute(f"{query} ORDER BY idx DESC LIMIT ?", (ident, count))
            return [(q, a) for q, a in rows][::-1]

    def check_room(self, ident: str) -> None:
        """TooManyTurnsError when the conversation already holds serve.max_turns turns (checked before answering)."""
        with self._lock:
            self._room(self._db, self._conversation(self._db, ident))

    def add_turn(self, ident: str, turn: dict[str, Any]) -> dict[str, Any]:
        """Store `turn` (the contract's fields but index and created) as the conversation's next one; the first
        turn of an untitled conversation titles it. Returns the stored turn."""
        with self._changing() as db:
            conversation = self._room(db, self._conversation(db, ident))
            index, now = conversation["turn_count"], time.time()
            stored = {"index": index, **turn, "created": now}
            values = [json.dumps(stored[key]) if key in _JSON else stored[key] for key in TURN_FIELDS]
            marks = ", ".join("?" * len(values))
            db.execute(f"INSERT INTO turns (conversation, {_TURN}) VALUES (?, {marks})", (ident, *values))
            title = db.execute("SELECT title FROM conversations WHERE id = ?", (ident,)).fetchone()[0]
            title = title if title is not None else title_from(turn["question"])
            db.execute("UPDATE conversations SET title = ?, updated = ? WHERE id = ?", (title, now, ident))
            return {**stored, "created": int(now)}

    def _room(self, db: sqlite3.Connection, conversation: dict[str, Any]) -> dict[str, Any]:
        count, limit = conversation["turn_count"], self.limits.max_turns
        if count >= limit:
            raise TooManyTurnsError(
                f"conversation {conversation['id']} already has {count} turns (serve.max_turns={limit}); "
                "start a new conversation (POST /v1/conversations)"
            )
        return conversation

    def _conversation(self, db: sqlite3.Connection, ident: str) -> dict[str, Any]:
        row = db.execute(f"{_CONVERSATION} FROM conversations WHERE id = ?", (ident,)).fetchone()
        if row is None:
            raise ConversationNotFoundError(
                f"no conversation with id {quoted(ident)}; GET /v1/conversations lists the conversations"
            )
        return _conversation_json(row)


def _conversation_json(row: tuple[Any, ...]) -> dict[str, Any]:
    ident, title, model, created, updated, turns = row
    return {
        "id": ident,
        "object": "conversation",
        "title": title if title is not None else UNTITLED,
        "model": model,
        "created": int(created),
        "updated": int(updated),
        "turn_count": turns,
    }


def _turn_json(row: tuple[Any, ...]) -> dict[str, Any]:
    turn = dict(zip(TURN_FIELDS, row))
    for key in _JSON:
        turn[key] = json.loads(turn[key])
    turn["refused"] = None if turn["refused"] is None else bool(turn["refused"])
    turn["complete"], turn["created"] = bool(turn["complete"]), int(turn["created"])
    return turn
