"""index.backend=milvus end to end on Milvus Lite: the same answers as hnswlib, generations as collections
behind an alias that a failed or killed ingest never moves, and clear errors before anything is written."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from models.config import Config, IndexConfig, load_config
from models.errors import ConfigError
from models.paths import index_dir
from rag.collection import Writer, current_generation, expectation, open_snapshot
from rag.generations.milvus import MilvusGenerations
from rag.index.milvus_client import alias_name, collection_name, connect
from rag.ingest import ingest
from rag.retrieve import build_retriever
from tests.conftest import EXAMPLES, REPO


def milvus(uri: Path, *extra: str) -> Config:
    return load_config(None, ["index.backend=milvus", f"index.uri={uri}", "index.name=lib", *extra])


def questions(path: Path) -> list[str]:
    return [json.loads(line)["question"] for line in path.read_text().splitlines() if line.strip()]


def top_sources(config: Config, embedder, asked: list[str]) -> list[list[tuple[str, int]]]:
    retriever = build_retriever(index_dir(config), config, embedder)
    return [[(Path(s.path).name, s.chunk) for s in retriever.retrieve(q).sources] for q in asked]


def collections(config: Config) -> set[str]:
    prefix = alias_name(config.index.name) + "__"
    return {name for name in connect(config.index).list_collections() if name.startswith(prefix)}


@pytest.mark.parametrize("retriever", ["dense", "hybrid"])
def test_examples_find_the_same_sources_as_hnswlib(tmp_path: Path, docs: Path, embedder, retriever: str) -> None:
    asked = questions(EXAMPLES / "questions.jsonl")
    reference = load_config(None, [f"rag.retriever={retriever}", "index.name=ref"])
    config = milvus(tmp_path / "milvus.db", f"rag.retriever={retriever}")
    chunks = {ingest([docs], c, embedder, progress=False).total_chunks for c in (reference, config)}
    assert len(chunks) == 1 and chunks.pop() > 0
    want = top_sources(reference, embedder, asked)
    assert top_sources(config, embedder, asked) == want and all(want)


@pytest.mark.slow
def test_incremental_ingest_matches_hnswlib_and_keeps_two_collections(tmp_path: Path, docs: Path, embedder) -> None:
    """Add, change and delete documents: each ingest builds the next collection from the last one."""
    reference, config = load_config(None, ["index.name=ref"]), milvus(tmp_path / "milvus.db")
    asked = questions(EXAMPLES / "questions.jsonl") + questions(EXAMPLES / "update" / "questions.jsonl")
    steps = [
        lambda: None,
        lambda: shutil.copytree(EXAMPLES / "update" / "docs", docs, dirs_exist_ok=True),  # added
        lambda: (docs / "borrowing-rules.txt").write_text("DVDs may be borrowed for 3 days. No renewals."),
        lambda: (docs / "events.jsonl").unlink(),  # deleted
    ]
    for number, change in enumerate(steps, start=1):
        change()
        summaries = [ingest([docs], c, embedder, progress=False) for c in (reference, config)]
        assert summaries[0].total_chunks == summaries[1].total_chunks
        assert top_sources(config, embedder, asked) == top_sources(reference, embedder, asked)
        generation = current_generation(index_dir(config))
        assert generation == f"gen-{number:06d}"
        # The served one and its base (a reader may still be searching it); older ones are dropped.
        kept = {f"gen-{n:06d}" for n in (number, number - 1) if n}
        assert collections(config) == {collection_name("lib", g) for g in kept}
        assert MilvusGenerations(config.index).serving().count == summaries[1].total_chunks


def test_a_failing_ingest_leaves_the_alias_on_the_old_generation(tmp_path: Path, docs: Path, embedder) -> None:
    config = milvus(tmp_path / "milvus.db")
    first = ingest([docs], config, embedder, progress=False)
    query = embedder.encode(["How long can I borrow a DVD?"])[0]
    before = MilvusGenerations(config.index).serving().search(query, 5)
    with pytest.raises(RuntimeError, match="power cut"):
        with Writer(index_dir(config), config, embedder.dim) as draft:
            draft.index.delete(draft.store.live_ids()[:5])
            draft.index.add(np.ones((3, embedder.dim), dtype=np.float32), [10**6, 10**6 + 1, 10**6 + 2])
            assert draft.index.count == first.total_chunks - 2  # the draft changed, in its own collection
            assert MilvusGenerations(config.index).serving().count == first.total_chunks  # readers do not see it
            raise RuntimeError("power cut")
    serving = MilvusGenerations(config.index).serving()
    assert serving.count == first.total_chunks
    after = serving.search(query, 5)
    np.testing.assert_array_equal(before[0], after[0])
    assert collections(config) == {collection_name("lib", "gen-000001")}  # the draft was dropped
    snapshot = open_snapshot(index_dir(config), expectation(config, embedder.dim))
    assert snapshot.generation == "gen-000001" and snapshot.index.count == first.total_chunks
    snapshot.close()


INGEST = (
    "import sys; from models.config import load_config; from models.embedders import build_embedder; "
    "from rag.ingest import ingest; c = load_config(None, sys.argv[2:]); "
    "ingest([sys.argv[1]], c, build_embedder(c.embedder), progress=False)"
)


def run_ingest(folder: Path, config_args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", INGEST, str(folder), *config_args]
    return subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_kill_9_mid_ingest_leaves_the_alias_on_the_old_generation(tmp_path: Path, docs: Path, embedder) -> None:
    """Milvus Lite is open to one process at a time: the ingests run in children, this process reads after."""
    uri = tmp_path / "milvus.db"
    args = ["index.backend=milvus", f"index.uri={uri}", "index.name=lib"]
    first = run_ingest(docs, args)
    assert first.wait(timeout=300) == 0, first.stderr.read().decode()
    big = tmp_path / "big"
    big.mkdir()
    for i in range(30):  # a few seconds of embedding: still running when killed a second in
        (big / f"doc{i:04d}.txt").write_text(" ".join(f"Note {j} of item {i}: shelf {i * j}." for j in range(60)))
    config = milvus(uri)
    root = index_dir(config)
    killed = run_ingest(big, args)
    deadline = time.monotonic() + 120
    while not list(root.glob(".gen.*.partial")) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(1.0)  # into embedding and inserting
    assert killed.poll() is None, "the ingest ended before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert current_generation(root) == "gen-000001"
    assert collection_name("lib", "gen-000002") in collections(config)  # the dead writer's, never served
    snapshot = open_snapshot(root, expectation(config, embedder.dim))
    serving = MilvusGenerations(config.index).serving()
    assert serving.count == snapshot.index.count == snapshot.store.chunk_count()
    query = embedder.encode(["How long can I borrow a DVD?"])[0]
    np.testing.assert_array_equal(serving.search(query, 3)[0], snapshot.index.search(query, 3)[0])
    snapshot.close()
    # The next ingest numbers past the dead writer's collection and publishes. It keeps that collection (newer
    # than its base, it could be another node's draft in progress); the ingest after it drops it.
    summary = ingest([big], config, embedder, progress=False)
    assert summary.generation == "gen-000003"
    assert MilvusGenerations(config.index).serving().count == summary.total_chunks
    assert collections(config) == {collection_name("lib", f"gen-00000{n}") for n in (1, 2, 3)}
    (big / "doc0000.txt").write_text("A changed note.")
    ingest([big], config, embedder, progress=False)
    assert collections(config) == {collection_name("lib", f"gen-00000{n}") for n in (3, 4)}


def test_an_unreachable_uri_fails_naming_the_key_before_anything_is_written(docs: Path, embedder) -> None:
    config = load_config(None, ["index.backend=milvus", "index.uri=http://127.0.0.1:9"])
    with pytest.raises(ConfigError, match=r"index.uri=http://127.0.0.1:9: Milvus cannot be reached"):
        ingest([docs], config, embedder, progress=False)
    root = index_dir(config)
    assert current_generation(root) is None and not list(root.glob("*gen*"))


def test_another_dimension_under_the_same_name_is_refused_naming_the_embedder(
    tmp_path: Path, docs: Path, embedder
) -> None:
    config = milvus(tmp_path / "milvus.db")
    summary = ingest([docs], config, embedder, progress=False)
    # Another machine (its own folder) with another embedder, pointed at the same engine and index name.
    with pytest.raises(ConfigError, match=r"serves index 'lib' with 384-dimensional vectors, but embedder.model"):
        with Writer(tmp_path / "elsewhere", config, dim=16, rebuild=True):
            pytest.fail("the writer started")
    assert not (tmp_path / "elsewhere" / "CURRENT").exists()
    assert MilvusGenerations(config.index).serving().count == summary.total_chunks


def test_names_are_milvus_names_and_keep_index_names_apart() -> None:
    names = [alias_name(n) for n in ("a-b", "a_b", "a.b", "é")]
    assert len(set(names)) == 4 and all(re.fullmatch(r"ragtune_\w+_[0-9a-f]{8}", n, flags=re.ASCII) for n in names)
    assert collection_name("a-b", "gen-000012") == names[0] + "__gen_000012"


def test_token_file_is_read_and_a_missing_one_named(tmp_path: Path) -> None:
    config = IndexConfig(backend="milvus", uri=str(tmp_path / "m.db"), token_file=str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match=r"index.token_file=.*absent: cannot be read"):
        connect(config)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], r"index.uri: is required with index.backend=milvus"),
        (["index.uri=/tmp/vectors"], r"index.uri: should be a local path ending in .db or http://host:19530"),
        (["index.uri=ftp://host"], r"index.uri: should be a local path ending in .db"),
        (["index.uri=http://root:secret@host:19530"], r"index.uri: should not hold credentials; .* index.token_file"),
    ],
)
def test_config_names_a_bad_uri(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["index.backend=milvus", *overrides])
