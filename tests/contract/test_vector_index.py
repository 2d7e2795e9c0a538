"""The VectorIndex contract, run against every backend: exact numpy search is the reference.

Adding a backend to rag/index INDEX_BACKENDS means adding its name to BACKENDS (a unit test checks).
milvus runs on Milvus Lite, in a file of the test session's temporary folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.config import IndexConfig
from models.errors import IndexCorruptError
from rag.index import IndexInfo, VectorIndex, create_index, index_class

BACKENDS = ["hnswlib", "milvus"]
SPACES = ["cosine", "ip", "l2"]
DIM = 16
FIX = "rebuild with `ragtune ingest --rebuild DOCS`"


URIS: dict[str, str] = {}  # backend -> index.uri, for the backends that keep vectors in an engine


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("milvus") / "contract.db")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "milvus":
        URIS["milvus"] = request.getfixturevalue("milvus_uri")
    return request.param


def config(backend: str, space: str) -> IndexConfig:
    return IndexConfig(backend=backend, space=space, uri=URIS.get(backend))


def make(backend: str, space: str = "l2", dim: int = DIM, capacity: int = 1024) -> VectorIndex:
    return create_index(config(backend, space), dim, capacity)


def random(rows: int, seed: int, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, dim), dtype=np.float32)


def save(index: VectorIndex, folder: Path) -> IndexInfo:
    """Save as a Writer does, and describe it as the manifest would."""
    folder.mkdir(exist_ok=True)
    section = index.save(folder)
    return IndexInfo(index.space, index.dim, index.count, index.deleted, section)


def load(backend: str, folder: Path, info: IndexInfo) -> VectorIndex:
    return index_class(backend).load(folder, info, config(backend, info.space))


def exact(data: np.ndarray, queries: np.ndarray, space: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of `data` per query and their scores in the contract's terms (higher is closer)."""
    if space == "cosine":
        data, queries = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (data, queries))
    if space == "l2":
        scores = -((queries[:, None, :] - data[None, :, :]) ** 2).sum(axis=2)
    else:
        scores = queries @ data.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return top, np.take_along_axis(scores, top, axis=1)


def test_add_delete_count(backend: str) -> None:
    index = make(backend)
    data, labels = random(100, seed=1), np.arange(1000, 1100) * 7  # labels need not be dense
    assert index.count == 0 and index.search(data[0], 5)[0].size == 0
    index.add(data, labels)
    assert index.count == 100 and index.deleted == 0
    np.testing.assert_array_equal(index.vectors(labels[:10].tolist()), data[:10])
    index.delete(labels[:10].tolist())
    assert index.count == 90 and index.deleted in (0, 10)  # 0 where deletes free their space at once


@pytest.mark.parametrize("space", SPACES)
def test_recall_at_10_against_exact_search(backend: str, space: str) -> None:
    data, queries = random(3000, seed=2), random(100, seed=3)
    index = make(backend, space)
    index.add(data, np.arange(len(data)))
    truth, truth_scores = exact(data, queries, space, 10)
    hits = 0
    for query, want, want_scores in zip(queries, truth, truth_scores):
        labels, scores = index.search(query, 10)
        assert labels.dtype == np.int64 and scores.dtype == np.float32 and len(labels) == 10
        assert np.all(np.diff(scores) <= 1e-6), "scores must come best first"
        hits += len(set(want.tolist()) & set(labels.tolist()))
        # A found neighbour scores what exact search gives it: cosine, inner product or -squared L2.
        expected = dict(zip(want.tolist(), want_scores.tolist()))
        for label, score in zip(labels.tolist(), scores.tolist()):
            if label in expected:
                assert score == pytest.approx(expected[label], rel=1e-4, abs=1e-4)
    assert hits / truth.size >= 0.95


def test_saved_index_loads_with_the_same_results(backend: str, tmp_path: Path) -> None:
    data, queries = random(500, seed=4), random(20, seed=5)
    index = make(backend, "cosine")
    index.add(data, np.arange(500))
    index.delete(list(range(0, 500, 5)))
    info = save(index, tmp_path / "saved")
    # The manifest hashes the files the backend names: they must be all it wrote.
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == sorted(info.params["files"])
    loaded = load(backend, tmp_path / "saved", info)
    assert (loaded.count, loaded.deleted) == (index.count, index.deleted) == (400, info.deleted)
    for query in queries:
        before, after = index.search(query, 10), loaded.search(query, 10)
        np.testing.assert_array_equal(before[0], after[0])
        np.testing.assert_allclose(before[1], after[1], rtol=1e-6)
        assert not set(after[0].tolist()) & set(range(0, 500, 5))


def test_search_with_k_above_count_returns_every_live_vector(backend: str) -> None:
    index = make(backend)
    index.add(random(5, seed=6), [3, 1, 4, 15, 9])
    labels, scores = index.search(random(1, seed=7)[0], 50)
    assert sorted(labels.tolist()) == [1, 3, 4, 9, 15] and len(scores) == 5
    index.delete([4])
    assert sorted(index.search(random(1, seed=7)[0], 50)[0].tolist()) == [1, 3, 9, 15]


def test_a_deleted_vector_cannot_be_found(backend: str) -> None:
    data = random(300, seed=8)
    index = make(backend)
    index.add(data, np.arange(300))
    gone = list(range(0, 300, 15))
    for label in gone:
        assert index.search(data[label], 1)[0].tolist() == [label]
    index.delete(gone)
    for label in gone:
        assert label not in index.search(data[label], 10)[0].tolist()


def test_growth_past_initial_capacity(backend: str, tmp_path: Path) -> None:
    data = random(200, seed=9)
    index = make(backend, capacity=16)
    for start in range(0, 200, 7):
        index.add(data[start : start + 7], np.arange(start, min(start + 7, 200)))
    assert index.count == 200
    loaded = load(backend, tmp_path, save(index, tmp_path))
    loaded.add(random(50, seed=10), np.arange(200, 250))  # a loaded index grows too
    assert loaded.count == 250
    for label in (0, 15, 16, 199):
        assert loaded.search(data[label], 1)[0].tolist() == [label]


def test_compaction_keeps_live_vectors_only(backend: str) -> None:
    data = random(600, seed=11)
    index = make(backend)
    index.add(data, np.arange(600))
    index.delete(list(range(400)))
    live = list(range(400, 600))
    fresh = index.compacted(live)
    assert (fresh.count, fresh.deleted, fresh.needs_compaction) == (200, 0, False)
    np.testing.assert_array_equal(fresh.vectors(live), data[400:])
    assert fresh.search(data[10], 1)[0].tolist() != [10] and fresh.search(data[450], 1)[0].tolist() == [450]


class TestDamagedFiles:
    """Refused with IndexCorruptError naming the fix, before the library reads a byte."""

    @pytest.fixture
    def saved(
        self, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
    ) -> tuple[Path, IndexInfo]:
        index = make(backend, "cosine")
        index.add(random(300, seed=12), np.arange(300))
        index.delete([7, 8])
        info = save(index, tmp_path)
        load(backend, tmp_path, info)  # intact, it loads; from here on, reading it is a failure
        if request.node.name.startswith(("test_truncated", "test_header")) and not info.params["files"]:
            # An engine's own storage is not ours to damage: tests/integration/test_milvus_index.py
            # covers what can go wrong there (unreachable index.uri, missing collection, another dimension).
            pytest.skip(f"{backend} keeps its vectors in an engine, not in files of the generation")
        monkeypatch.setattr(index_class(backend), "_read", classmethod(lambda *a: pytest.fail("library read it")))
        return tmp_path, info

    def refused(self, backend: str, folder: Path, info: IndexInfo) -> None:
        with pytest.raises(IndexCorruptError, match=FIX):
            load(backend, folder, info)

    @pytest.mark.parametrize("cut", [1, 100, "half", "all but 10"])
    def test_truncated(self, backend: str, saved: tuple[Path, IndexInfo], cut: int | str) -> None:
        folder, info = saved
        for name in info.params["files"]:
            path = folder / name
            data = path.read_bytes()
            keep = len(data) // 2 if cut == "half" else 10 if cut == "all but 10" else len(data) - cut
            path.write_bytes(data[:keep])
            self.refused(backend, folder, info)
            path.write_bytes(data + b"\0" * 4)  # and grown
            self.refused(backend, folder, info)
            path.write_bytes(data)

    def test_header_bytes_flipped(self, backend: str, saved: tuple[Path, IndexInfo]) -> None:
        # Every format wrapped keeps its shape (sizes, counts, offsets) in its first 48 bytes.
        folder, info = saved
        for name in info.params["files"]:
            path = folder / name
            data = path.read_bytes()
            for offset in range(48):
                damaged = bytearray(data)
                damaged[offset] ^= 0xFF
                path.write_bytes(bytes(damaged))
                self.refused(backend, folder, info)
            path.write_bytes(data)

    def test_another_dimension_or_count(self, backend: str, saved: tuple[Path, IndexInfo]) -> None:
        folder, info = saved
        stored = info.count + info.deleted  # 300, or 298 where deletes free their space at once
        with pytest.raises(
            IndexCorruptError,
            match=f"holds {stored} vectors of 16 dimensions but its manifest says {stored} of 32; {FIX}",
        ):
            load(backend, folder, IndexInfo(info.space, 32, info.count, info.deleted, info.params))
        self.refused(backend, folder, IndexInfo(info.space, DIM, info.count + 1, info.deleted, info.params))
