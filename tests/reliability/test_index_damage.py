"""A damaged or mismatched index is refused with a clear error before its library (hnswlib) reads a byte of it."""

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.config import load_config
from models.errors import ConfigError, IndexCorruptError, IndexLockedError
from models.paths import index_dir
from rag.collection import Expectation, Writer, current_generation, expectation, open_snapshot
from rag.ingest import ingest


@pytest.fixture
def built(docs: Path, tiny_config, embedder) -> tuple[Path, Expectation]:
    ingest([docs], tiny_config, embedder)
    root = index_dir(tiny_config)
    return root / current_generation(root), expectation(tiny_config, embedder.dim)


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_truncated_vectors_file(built) -> None:
    folder, expect = built
    path = folder / "vectors.hnsw"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(IndexCorruptError, match="vectors.hnsw is 1000 bytes but its manifest says"):
        open_snapshot(folder.parent, expect)


@pytest.mark.parametrize("name", ["vectors.hnsw", "chunks.sqlite"])
def test_flipped_byte(built, name: str) -> None:
    folder, expect = built
    flip_byte(folder / name, (folder / name).stat().st_size // 2)
    with pytest.raises(IndexCorruptError, match=f"{name} does not match the sha256"):
        open_snapshot(folder.parent, expect)


def test_garbage_or_missing_manifest(built) -> None:
    folder, expect = built
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(IndexCorruptError, match="index manifest .* is unreadable"):
        open_snapshot(folder.parent, expect)
    (folder / "manifest.json").unlink()
    with pytest.raises(IndexCorruptError, match="manifest.json is missing"):
        open_snapshot(folder.parent, expect)


def test_wrong_dimension_from_config_is_a_config_error(built) -> None:
    folder, expect = built
    with pytest.raises(ConfigError, match=r"\(384 dimensions\) but embedder.model is 'minilm-l6' \(768\)"):
        open_snapshot(folder.parent, replace(expect, dim=768))
    with pytest.raises(ConfigError, match="space 'cosine' but index.space is 'l2'"):
        open_snapshot(folder.parent, replace(expect, index=replace(expect.index, space="l2")))


def edit_manifest(folder: Path, edit) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_index_built_by_another_backend_is_a_config_error(built, tiny_config, embedder) -> None:
    folder, expect = built
    edit_manifest(folder, lambda m: m["index"].update(backend="faiss"))
    message = r"built with index.backend 'faiss' but index.backend is 'hnswlib'; set index.backend=faiss or rebuild"
    with pytest.raises(ConfigError, match=message):
        open_snapshot(folder.parent, expect)
    with pytest.raises(ConfigError, match=message):  # a writer refuses to extend it, and leaves nothing behind
        Writer(folder.parent, tiny_config, embedder.dim).__enter__()
    assert not list(folder.parent.glob(".*.partial"))
    with Writer(folder.parent, tiny_config, embedder.dim, rebuild=True):  # the lock was released
        pass


def test_manifest_from_before_index_backend_still_opens(built) -> None:
    """Format-1 manifests had hnswlib's m and ef_construction at the top level and no index section."""
    folder, expect = built

    def to_old_layout(manifest: dict) -> None:
        section = manifest.pop("index")
        manifest.update(m=section["m"], ef_construction=section["ef_construction"])

    edit_manifest(folder, to_old_layout)
    snapshot = open_snapshot(folder.parent, expect)
    first = snapshot.store.live_ids()[0]
    _, scores = snapshot.index.search(snapshot.index.vectors([first])[0], 3)
    assert snapshot.index.count == snapshot.store.chunk_count() > 0 and scores[0] > 0.999


@pytest.mark.parametrize("section", [None, [], {"files": ["vectors.hnsw"]}, {"backend": 3}])
def test_damaged_index_section_of_the_manifest(built, section) -> None:
    folder, expect = built
    edit_manifest(folder, lambda m: m.update(index=section))
    with pytest.raises(IndexCorruptError, match="manifest.json lacks required fields or holds them with the wrong"):
        open_snapshot(folder.parent, expect)


def test_hand_edited_manifest_cannot_smuggle_a_wrong_dimension(tmp_path: Path, monkeypatch) -> None:
    """An 8-dimensional file whose manifest claims 384 is caught by reading the file's own header."""
    monkeypatch.setenv("RAGTUNE_HOME", str(tmp_path))
    config = load_config()
    root = index_dir(config)
    with (writer := Writer(root, config, dim=8)) as draft:
        ids = draft.store.add_document("/d.txt", "/", "0" * 64, 1, [("", f"chunk {i}") for i in range(5)])
        draft.index.add(np.random.default_rng(0).random((5, 8), dtype=np.float32), ids)
        writer.commit()
    edit_manifest(root / current_generation(root), lambda m: m.update(dim=384))
    with pytest.raises(IndexCorruptError, match="holds 5 vectors of 8 dimensions but its manifest says 5 of 384"):
        open_snapshot(root, expectation(config, 384))


def test_many_deletes_publish_a_compacted_index_that_opens(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RAGTUNE_HOME", str(tmp_path))
    config, rng = load_config(), np.random.default_rng(1)
    root = index_dir(config)
    with (writer := Writer(root, config, dim=8)) as draft:
        ids = draft.store.add_document("/a.txt", "/", "0" * 64, 1, [("", f"a{i}") for i in range(300)])
        draft.index.add(rng.random((300, 8), dtype=np.float32), ids)
        writer.commit()
    with (writer := Writer(root, config, dim=8)) as draft:
        draft.index.delete(draft.store.remove_document("/a.txt"))
        ids = draft.store.add_document("/b.txt", "/", "1" * 64, 1, [("", f"b{i}") for i in range(10)])
        vectors = rng.random((10, 8), dtype=np.float32)
        draft.index.add(vectors, ids)
        writer.commit()
    snapshot = open_snapshot(root, expectation(config, 8))
    assert (snapshot.manifest["count"], snapshot.manifest["deleted"], snapshot.index.deleted) == (10, 0, 0)
    assert snapshot.manifest["index"] == {
        "backend": "hnswlib",
        "files": ["vectors.hnsw"],
        "m": 16,
        "ef_construction": 200,
        "capacity": 10,
    }
    assert "m" not in snapshot.manifest  # build settings live in the backend's section now
    assert snapshot.index.search(vectors[3], 1)[0].tolist() == [ids[3]]


def test_manifest_counts_that_disagree_with_the_chunk_store(built) -> None:
    """Moving one vector from live to deleted keeps the file's total, so only the chunk count can catch it."""
    folder, expect = built
    n = json.loads((folder / "manifest.json").read_text())["count"]
    edit_manifest(folder, lambda m: m.update(count=n - 1, deleted=m["deleted"] + 1))
    with pytest.raises(
        IndexCorruptError, match=rf"vectors \({n - 1}\), chunks \({n}\) and manifest \({n - 1}\) disagree"
    ):
        open_snapshot(folder.parent, expect)


def test_second_writer_is_locked_out_while_readers_keep_working(built, tiny_config, embedder) -> None:
    folder, expect = built
    root = folder.parent
    with Writer(root, tiny_config, embedder.dim):
        with pytest.raises(IndexLockedError, match="being written by another process"):
            Writer(root, tiny_config, embedder.dim).__enter__()
        snapshot = open_snapshot(root, expect)
        assert snapshot.index.count > 0
    with Writer(root, tiny_config, embedder.dim):  # released once the first writer is done
        pass


def test_failed_write_leaves_the_current_generation_untouched(built, tiny_config, embedder) -> None:
    folder, expect = built
    root = folder.parent
    with pytest.raises(RuntimeError, match="boom"):
        with Writer(root, tiny_config, embedder.dim) as draft:
            draft.store.remove_document(draft.store.documents()[0].path)
            raise RuntimeError("boom")
    assert current_generation(root) == folder.name
    assert not list(root.glob(".*.partial"))
    open_snapshot(root, expect)


def _damage_current(root: Path, kind: str) -> None:
    current = root / "CURRENT"
    current.unlink()
    if kind == "non-utf8":
        current.write_bytes(b"\xff\xfegen-\x80\x81\n")
    elif kind == "directory":
        current.mkdir()
    elif kind == "fifo":  # reading it would block until a writer came: every reader would hang
        os.mkfifo(current)
    elif kind == "outside":
        current.write_text("../../../etc\n")
    elif kind == "absolute":
        current.write_text(str(root.parent) + "\n")


@pytest.mark.parametrize("kind", ["non-utf8", "directory", "fifo", "outside", "absolute"])
def test_a_damaged_current_pointer_is_corrupt_and_rebuild_repairs_it(built, kind: str, docs, tiny_config, embedder):
    folder, expect = built
    _damage_current(folder.parent, kind)
    with pytest.raises(IndexCorruptError, match="CURRENT") as caught:
        open_snapshot(folder.parent, expect)
    assert "ingest --rebuild" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(IndexCorruptError, match="CURRENT"):
        ingest([docs], tiny_config, embedder)  # an incremental ingest cannot start from it either
    ingest([docs], tiny_config, embedder, rebuild=True)
    assert open_snapshot(folder.parent, expect).index.count > 0


@pytest.mark.parametrize(
    "field,value",
    [("files", ["vectors.hnsw"]), ("files", {"../../x": {"size": 1, "sha256": "0"}}), ("count", "13"), ("dim", True)],
)
def test_a_manifest_field_of_the_wrong_type_is_corrupt(built, field: str, value) -> None:
    folder, expect = built
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest[field] = value
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexCorruptError, match="malformed|wrong type"):
        open_snapshot(folder.parent, expect)


def test_the_server_reports_a_damaged_index_as_503_and_health_still_answers(built, tiny_lm_path, embedder) -> None:
    import httpx

    from models.generate import load_language_model
    from ragtune.serve.background import running
    from ragtune.serve.engine import Engine
    from ragtune.serve.routes import create_app

    folder, _ = built
    _damage_current(folder.parent, "non-utf8")
    config = load_config(None, [f"llm.model={tiny_lm_path}", "llm.dtype=float32", "llm.max_new_tokens=4"])
    engine = Engine(config, embedder=embedder, lm=load_language_model(config.llm, progress=False))
    key = "k" * 32
    with running(create_app(engine, key)) as url:
        health = httpx.get(url + "/health")
        body = {"model": "rag", "messages": [{"role": "user", "content": "When is the library open?"}]}
        chat = httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert health.status_code == 200 and health.json()["index"] == "damaged"
    assert str(tiny_lm_path) not in health.text  # no server paths to a caller without a key
    assert chat.status_code == 503 and chat.json()["error"]["code"] == "index_unavailable"
    assert str(folder.parent) not in chat.text  # nor in error bodies


def rehash(folder: Path) -> None:
    """Make the manifest vouch for the files as they now are, so only the lexical checks can catch the change."""
    from models.storage import describe_files

    edit_manifest(folder, lambda m: m.update(files=describe_files(folder, list(m["files"]))))


def edit_store(folder: Path, *statements: str) -> None:
    import sqlite3

    db = sqlite3.connect(folder / "chunks.sqlite")
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


def test_a_lexical_index_missing_a_row_is_out_of_step(built) -> None:
    folder, expect = built
    n = json.loads((folder / "manifest.json").read_text())["count"]
    edit_store(
        folder,
        "INSERT INTO chunks_fts(chunks_fts, rowid, context, text) "
        "SELECT 'delete', id, context, text FROM chunks ORDER BY id LIMIT 1",
    )
    rehash(folder)
    message = rf"the lexical index \({n - 1} rows\), manifest \({n}\) and chunks \({n}\) disagree; rebuild"
    with pytest.raises(IndexCorruptError, match=message):
        open_snapshot(folder.parent, expect)


def test_a_chunk_store_from_another_generation_is_refused(built) -> None:
    folder, expect = built
    edit_store(folder, "UPDATE meta SET value = 'gen-000099' WHERE key = 'generation'")
    rehash(folder)
    with pytest.raises(IndexCorruptError, match=rf"written for generation 'gen-000099', not {folder.name}; rebuild"):
        open_snapshot(folder.parent, expect)


def test_a_dropped_lexical_table_is_refused(built) -> None:
    folder, expect = built
    edit_store(folder, "DROP TABLE chunks_fts")
    rehash(folder)
    with pytest.raises(IndexCorruptError, match="lacks the lexical index its manifest records"):
        open_snapshot(folder.parent, expect)


@pytest.mark.parametrize(
    "section,message",
    [
        ({"table": "chunks_fts", "tokenizer": "trigram", "rows": 1}, "built with tokenizer 'trigram'"),
        ({"table": "chunks_fts", "tokenizer": "porter unicode61 remove_diacritics 2"}, "lexical section is malformed"),
        ("yes", "lexical section is malformed"),
    ],
)
def test_a_damaged_lexical_section_of_the_manifest(built, section, message: str) -> None:
    folder, expect = built
    edit_manifest(folder, lambda m: m.update(lexical=section))
    with pytest.raises(IndexCorruptError, match=message):
        open_snapshot(folder.parent, expect)
