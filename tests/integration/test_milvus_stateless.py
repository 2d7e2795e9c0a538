"""A node with index.backend=milvus and no index folder answers from the engine alone: the same sources as
hnswlib, a newly published generation seen at the next question, and a clear error for what it cannot do.

Milvus Lite opens its .db file in one process at a time, so the writer closes it before a reader opens it:
the reader runs in this process after the writer's ingest, or as a separate process started after it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from models.config import Config, load_config
from models.errors import ConfigError, InputError
from models.paths import index_dir
from rag.collection import Writer
from rag.index.milvus_client import disconnect
from rag.ingest import ingest
from rag.retrieve import build_retriever
from tests.conftest import EXAMPLES, REPO

# Prints the top sources of each question (one JSON line) from a process whose RAGTUNE_HOME is empty.
_READER = """
import json, sys
from models.config import load_config
from models.embedders import build_embedder
from models.paths import index_dir
from rag.retrieve import build_retriever
config = load_config(None, sys.argv[2:])
assert not index_dir(config).exists(), "the reader must have no index folder"
retriever = build_retriever(index_dir(config), config, build_embedder(config.embedder))
for question in json.loads(sys.argv[1]):
    found = retriever.retrieve(question)
    print(json.dumps([found.generation, [[s.path, s.chunk, s.locator, s.text] for s in found.sources]]))
"""


def milvus(uri: Path, *extra: str) -> list[str]:
    # The default retriever is hybrid; a node without the index folder serves dense retrieval.
    return ["index.backend=milvus", f"index.uri={uri}", "index.name=lib", "rag.retriever=dense", *extra]


def questions() -> list[str]:
    lines = (EXAMPLES / "questions.jsonl").read_text().splitlines()
    return [json.loads(line)["question"] for line in lines if line.strip()]


def sources(config: Config, embedder, asked: list[str]) -> list[list[list]]:
    retriever = build_retriever(index_dir(config), config, embedder)
    return [[[s.path, s.chunk, s.locator, s.text] for s in retriever.retrieve(q).sources] for q in asked]


def read_elsewhere(tmp_path: Path, overrides: list[str], asked: list[str]) -> list[list]:
    """Each question's [generation, sources] from a new process with its own, empty RAGTUNE_HOME."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAGTUNE_HOME": str(tmp_path / "reader-home")}
    command = [sys.executable, "-c", _READER, json.dumps(asked), *overrides]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.slow
def test_a_reader_without_the_index_folder_answers_like_hnswlib(tmp_path: Path, docs: Path, embedder) -> None:
    asked = questions()
    reference = load_config(None, ["index.name=ref", "rag.retriever=dense"])
    writer = load_config(None, milvus(tmp_path / "m.db"))
    for config in (reference, writer):
        ingest([docs], config, embedder, progress=False)
    want = sources(reference, embedder, asked)
    disconnect(writer.index)
    first = read_elsewhere(tmp_path, milvus(tmp_path / "m.db"), asked)
    assert [found for _, found in first] == want and all(want)  # paths, ordinals, locators and texts
    # The writer publishes a new generation; a new reader process serves it, new document included.
    (docs / "zebra.md").write_text("# Zebra migration\n\nZebras of the Serengeti cross the Mara river in July.\n")
    summary = ingest([docs], writer, embedder, progress=False)
    disconnect(writer.index)
    second = read_elsewhere(tmp_path, milvus(tmp_path / "m.db"), ["When do zebras cross the Mara river?"])
    assert second[0][0] == summary.generation != first[0][0]
    assert Path(second[0][1][0][0]).name == "zebra.md" and "July" in second[0][1][0][3]


@pytest.mark.slow
def test_a_live_reader_picks_up_a_published_generation(tmp_path: Path, docs: Path, embedder, monkeypatch) -> None:
    writer_home, reader_home = tmp_path / "writer-home", tmp_path / "reader-home"
    monkeypatch.setenv("RAGTUNE_HOME", str(writer_home))
    config = load_config(None, milvus(tmp_path / "m.db"))
    first = ingest([docs], config, embedder, progress=False).generation
    monkeypatch.setenv("RAGTUNE_HOME", str(reader_home))
    retriever = build_retriever(index_dir(config), config, embedder)  # same process: Milvus Lite's one client
    assert not index_dir(config).exists() and retriever.retrieve("zebras").generation == first
    monkeypatch.setenv("RAGTUNE_HOME", str(writer_home))
    (docs / "zebra.md").write_text("# Zebra migration\n\nZebras of the Serengeti cross the Mara river in July.\n")
    second = ingest([docs], config, embedder, progress=False).generation
    monkeypatch.setenv("RAGTUNE_HOME", str(reader_home))
    found = retriever.retrieve("When do zebras cross the Mara river?")  # the same retriever, no restart
    assert found.generation == second != first
    assert Path(found.sources[0].path).name == "zebra.md"


@pytest.mark.parametrize("retriever", ["lexical", "hybrid"])
def test_lexical_retrieval_without_the_index_folder_is_a_config_error(
    tmp_path: Path, docs: Path, embedder, ragtune_home: Path, retriever: str
) -> None:
    config = load_config(None, milvus(tmp_path / "m.db", f"rag.retriever={retriever}"))
    ingest([docs], config, embedder, progress=False)
    shutil.rmtree(ragtune_home)  # this node keeps only index.uri
    with pytest.raises(ConfigError, match=r"supports rag.retriever=dense \(the node holding the index folder"):
        build_retriever(index_dir(config), config, embedder).check()


def test_another_embedder_is_refused_naming_embedder_model(tmp_path: Path, docs: Path, embedder, ragtune_home) -> None:
    config = load_config(None, milvus(tmp_path / "m.db"))
    ingest([docs], config, embedder, progress=False)
    shutil.rmtree(ragtune_home)
    other = load_config(None, milvus(tmp_path / "m.db", "embedder.model=other-embedder"))
    with pytest.raises(ConfigError, match=r"embedder.model is 'other-embedder'.*set embedder.model=minilm-l6"):
        build_retriever(index_dir(other), other, embedder).check()


def test_a_chunk_too_long_for_a_milvus_field_is_refused_not_cut(tmp_path: Path) -> None:
    config = load_config(None, milvus(tmp_path / "m.db"))
    text = "x" * 70_000
    with pytest.raises(InputError, match=r"long.md: chunk 0's text is 70000 bytes, more than the 65535"):
        with Writer(index_dir(config), config, 4) as draft:
            ids = draft.store.add_document("long.md", str(tmp_path), "0" * 64, len(text), [("", text, "")])
            draft.index.add([[1.0, 0.0, 0.0, 0.0]], ids)


@pytest.mark.slow
def test_serve_answers_with_sources_from_index_uri_alone(
    tmp_path: Path, docs: Path, embedder, tiny_lm_path: Path, ragtune_home: Path
) -> None:
    import httpx

    from models.generate import load_language_model
    from ragtune.serve.background import running
    from ragtune.serve.engine import Engine
    from ragtune.serve.routes import create_app

    lm = [f"llm.model={tiny_lm_path}", "llm.dtype=float32", "llm.device=cpu", "llm.max_new_tokens=4"]
    config = load_config(None, milvus(tmp_path / "m.db", *lm))
    generation = ingest([docs], config, embedder, progress=False).generation
    shutil.rmtree(ragtune_home)  # the serving node keeps only index.uri and index.name
    engine = Engine(config, embedder=embedder, lm=load_language_model(config.llm, progress=False))
    key = "k" * 32
    with running(create_app(engine, key)) as url:
        health = httpx.get(f"{url}/health", timeout=30).json()
        assert (health["index"], health["index_generation"]) == ("ok", generation)
        body = {"model": "rag", "messages": [{"role": "user", "content": "How long can I borrow a DVD?"}]}
        ask = {"json": body, "headers": {"Authorization": f"Bearer {key}"}, "timeout": 120}
        reply = httpx.post(f"{url}/v1/chat/completions", **ask)
        assert reply.status_code == 200, reply.text
        first = reply.json()["sources"][0]
        assert Path(first["path"]).name == "borrowing-rules.txt" and "DVD" in first["text"]
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(str(tmp_path / "m.db"))  # the engine goes down; serve stays up
        down = httpx.post(f"{url}/v1/chat/completions", **ask)
        health = httpx.get(f"{url}/health", timeout=30)
    # Unreachable, not damaged; the key to check, not the address, for a caller without a key.
    assert health.status_code == 200 and health.json()["index"] == "unreachable", health.text
    assert "index.uri" in health.json()["index_error"] and "m.db" not in health.text
    assert down.status_code == 503, down.text  # an index error naming index.uri, not a 500
    # serve names no directory: index.uri's file alone
    assert down.json()["error"]["code"] == "index_unavailable" and "index.uri=m.db" in down.text
    assert not ragtune_home.exists()
