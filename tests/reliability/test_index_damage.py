"""A damaged or mismatched index is refused with a clear error before hnswlib reads a byte of it."""

import json
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
        open_snapshot(folder.parent, replace(expect, space="l2"))


def test_hand_edited_manifest_cannot_smuggle_a_wrong_dimension(tmp_path: Path, monkeypatch) -> None:
    """An 8-dimensional file whose manifest claims 384 is caught by reading the file's own header."""
    monkeypatch.setenv("RAGTUNE_HOME", str(tmp_path))
    config = load_config()
    root = index_dir(config)
    with (writer := Writer(root, config, dim=8)) as draft:
        ids = draft.store.add_document("/d.txt", "/", "0" * 64, 1, [("", f"chunk {i}") for i in range(5)])
        draft.index.add(np.random.default_rng(0).random((5, 8), dtype=np.float32), ids)
        writer.commit()
    manifest_path = root / current_generation(root) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["dim"] = 384
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexCorruptError, match="holds 5 vectors of 8 dimensions but its manifest says 5 of 384"):
        open_snapshot(root, expectation(config, 384))


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
