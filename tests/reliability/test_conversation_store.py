"""The conversations file under crashes, damage and oversized requests: kill -9 while turns are added leaves whole
turns only; a damaged file is named with its fix; a conversation or a chat past its bounds is a 4xx that changes
nothing stored."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from models.config import ServeConfig, load_config
from models.generate import load_language_model
from ragtune.serve.background import running
from ragtune.serve.conversations import ConversationStore, ConversationStoreError, conversations_file
from ragtune.serve.engine import Engine
from ragtune.serve.server import assemble
from tests.conftest import REPO

KEY = "store-key-" + "s" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}
# Adds turns, each one large (its sources fill several pages), and prints each stored index once committed.
WRITER = """
import sys
from pathlib import Path
from models.config import ServeConfig
from ragtune.serve.conversations import ConversationStore
store = ConversationStore(Path(sys.argv[1]), ServeConfig(max_turns=100_000))
ident = sys.argv[2]
start = next(c["turn_count"] for c in store.newest_first() if c["id"] == ident)
for i in range(start, 100_000):
    text = f"answer {i} " * 200
    sources = [{"number": n, "path": f"doc{n}.txt", "text": text} for n in range(1, 6)]
    turn = {"question": f"question {i}", "answer": text, "model": "base", "query": None, "sources": sources,
            "refused": None, "cited": [], "support": None, "sentences": [], "timings": {"total_s": i},
            "complete": True}
    print(store.add_turn(ident, turn)["index"], flush=True)
"""


def test_kill_9_while_adding_turns_leaves_whole_turns_only(tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite"
    store = ConversationStore(path, ServeConfig(max_turns=100_000))
    ident = store.create("crash")["id"]
    store.close()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    committed = 0
    for wait_for in (1, 7, 30):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), ident], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        seen = 0
        assert writer.stdout is not None
        while seen < wait_for and writer.stdout.readline():
            seen += 1
        writer.send_signal(signal.SIGKILL)  # mid-transaction, most likely: turns are added back to back
        writer.wait()
        assert seen == wait_for, writer.stderr.read().decode() if writer.stderr else ""
        committed += seen
        store = ConversationStore(path, ServeConfig(max_turns=100_000))  # opens: checked, the WAL recovered
        conversation = store.get(ident)
        store.close()
        turns = conversation["turns"]
        # Every turn reported committed is there; at most the one in flight besides; each one whole.
        assert committed <= len(turns) <= committed + 1 and conversation["turn_count"] == len(turns)
        assert [t["index"] for t in turns] == list(range(len(turns)))
        for turn in turns:
            text = f"answer {turn['index']} " * 200
            assert turn["question"] == f"question {turn['index']}" and turn["answer"] == text
            assert len(turn["sources"]) == 5 and all(s["text"] == text for s in turn["sources"])
            assert turn["timings"] == {"total_s": turn["index"]} and turn["complete"] is True
        committed = len(turns)


@pytest.mark.parametrize("damage", ["not a database", "pages overwritten"])
def test_a_damaged_file_is_named_with_its_fix(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "conversations.sqlite"
    if damage == "not a database":
        path.write_bytes(b"these are not the conversations you are looking for\n" * 200)
    else:
        store = ConversationStore(path, ServeConfig())
        ident = store.create()["id"]
        turn = {"answer": "a" * 2000, "model": "base", "query": None, "sources": [], "refused": None, "cited": []}
        turn |= {"support": None, "sentences": [], "timings": {}, "complete": True}
        for i in range(50):
            store.add_turn(ident, {"question": f"q{i}", **turn})
        store.close()
        # Fold the WAL into the file first, so the damage is not undone by a WAL that still holds the pages.
        db = sqlite3.connect(path)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        data = bytearray(path.read_bytes())
        assert len(data) > 16 * 4096
        data[4096 : 4096 * 12] = os.urandom(4096 * 11)
        path.write_bytes(bytes(data))
    with pytest.raises(ConversationStoreError) as caught:
        ConversationStore(path, ServeConfig())
    message = str(caught.value)
    assert str(path) in message and "is damaged" in message and "move that file" in message and "\n" not in message


def test_the_server_refuses_to_start_over_a_damaged_file(tiny_lm_path: Path, embedder, ragtune_home: Path) -> None:
    path = conversations_file(ragtune_home)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00garbage" * 1000)
    config = load_config(None, [f"llm.model={tiny_lm_path}", "llm.dtype=float32", "llm.device=cpu"])
    engine = Engine(config, embedder=embedder, lm=load_language_model(config.llm, progress=False))
    with pytest.raises(ConversationStoreError, match="conversations.sqlite is damaged"):
        assemble(engine, KEY)


def test_requests_past_the_bounds_are_refused_and_change_nothing(tiny_lm_path: Path, embedder) -> None:
    settings = ["llm.dtype=float32", "llm.device=cpu", "llm.max_new_tokens=2", "serve.max_turns=1000"]
    config = load_config(None, [f"llm.model={tiny_lm_path}", *settings])
    engine = Engine(config, embedder=embedder, lm=load_language_model(config.llm, progress=False))
    app = assemble(engine, KEY)
    store: ConversationStore = app.state.conversations
    ident = store.create("long")["id"]
    turn = {"answer": "a", "model": "base", "query": None, "sources": [], "refused": None, "cited": []}
    turn |= {"support": None, "sentences": [], "timings": {}, "complete": True}
    for i in range(999):
        store.add_turn(ident, {"question": f"q{i}", **turn})
    with running(app) as url:
        turns = f"{url}/v1/conversations/{ident}/turns"
        # The 1000th turn: only the latest turns within serve.max_messages reach the model, and it is stored.
        started = time.monotonic()
        ask = {"question": "And then?", "model": "base", "max_tokens": 2, "stream": False}
        reply = httpx.post(turns, json=ask, headers=AUTH, timeout=60)
        assert reply.status_code == 200 and reply.json()["turn"]["index"] == 999, reply.text
        assert time.monotonic() - started < 30
        before = httpx.get(f"{url}/v1/conversations/{ident}", headers=AUTH, timeout=60).json()
        # Past serve.max_turns, asked again and again (as a client looping 50,000 times would): 403 at once.
        for stream in (True, False) * 5:
            refused = httpx.post(turns, json={**ask, "stream": stream}, headers=AUTH, timeout=60)
            assert refused.status_code == 403, refused.text
            error = refused.json()["error"]
            assert error["code"] == "too_many_turns" and "1000 turns (serve.max_turns=1000)" in error["message"]
        # A chat of 50,000 messages: refused before it is read in full, and nothing is stored for it.
        many = {"model": "base", "messages": [{"role": "user", "content": "a"}] * 50_000, "max_tokens": 1}
        chat = httpx.post(f"{url}/v1/chat/completions", json=many, headers=AUTH, timeout=60)
        assert 400 <= chat.status_code < 500 and "error" in chat.json(), chat.text
        message = chat.json()["error"]["message"]
        assert "serve.max_request_bytes" in message or "serve.max_messages" in message
        after = httpx.get(f"{url}/v1/conversations/{ident}", headers=AUTH, timeout=60).json()
        listed = httpx.get(f"{url}/v1/conversations", headers=AUTH, timeout=60).json()["data"]
    assert after == before and after["turn_count"] == 1000 and [c["id"] for c in listed] == [ident]
    assert json.dumps(after).count('"complete": true') == 1000
