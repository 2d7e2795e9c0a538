"""The GenerationStore contract, run against every store: a folder of files, and Milvus Lite's alias store.

Adding a store to rag/generations GENERATION_STORES means adding its index.backend to BACKENDS (a unit test
checks). The Milvus stores share one Milvus Lite file per session, each test under its own index.name.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from models.config import IndexConfig, load_config
from models.errors import ConfigError, IndexMissingError
from rag.collection import Writer
from rag.generations import GenerationStore, generation_store
from rag.index import VectorIndex
from rag.store import ChunkStore

BACKENDS = ["hnswlib", "milvus"]
DIM = 8
FACTS = {"format": 1, "embedder": "contract-embedder", "dim": DIM, "space": "cosine", "contextual": False}


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("milvus") / "generations.db")


@pytest.fixture(params=BACKENDS)
def config(request: pytest.FixtureRequest) -> IndexConfig:
    name = re.sub(r"\W+", "-", request.node.name)[:60]  # one index per test: the engine's generations are its own
    uri = request.getfixturevalue("milvus_uri") if request.param == "milvus" else None
    return IndexConfig(backend=request.param, space="cosine", uri=uri, name=name)


@pytest.fixture
def store(config: IndexConfig) -> GenerationStore:
    return generation_store(config)


@pytest.fixture
def chunks(tmp_path: Path) -> ChunkStore:
    """A writer's chunks: three of one document, ids 0-2."""
    store = ChunkStore(tmp_path / "chunks.sqlite")
    store.add_document("/a.md", "/", "0" * 64, 1, [("p. 1", "alpha"), ("p. 2", "beta"), ("p. 3", "gamma")])
    store.commit()
    return store


def vectors(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, DIM), dtype=np.float32)


def written(
    store: GenerationStore, base: VectorIndex | None, generation: str, chunks: ChunkStore, folder: Path
) -> VectorIndex:
    """A draft of `generation` holding the chunks' vectors, saved as a writer's commit saves it."""
    draft = store.draft(base, generation, DIM, chunks, FACTS)
    if base is None:
        draft.add(vectors(3), chunks.live_ids())
    folder.mkdir(parents=True, exist_ok=True)
    draft.save(folder)
    return draft


def test_draft_publish_served(store: GenerationStore, chunks: ChunkStore, tmp_path: Path) -> None:
    store.prepare(DIM, FACTS["embedder"])
    draft = written(store, None, "gen-000001", chunks, tmp_path / "gen-000001")
    assert draft.count == 3
    store.publish("gen-000001", keep={"gen-000001", None})
    if not store.keeps_chunks:  # a folder of files serves nothing without its folder
        assert store.served() is None
        with pytest.raises(IndexMissingError, match="only from its index folder"):
            store.open_served("gen-000001")
        return
    assert store.served() == "gen-000001"
    index, served, facts = store.open_served("gen-000001")
    assert (index.count, facts["count"], facts["dim"], facts["embedder"]) == (3, 3, DIM, FACTS["embedder"])
    assert index.search(vectors(3)[1], 1)[0].tolist() == [1]
    found = served.chunks([0, 2, 99])
    assert sorted(found) == [0, 2] and (found[2].text, found[2].locator, found[2].path) == ("gamma", "p. 3", "/a.md")
    assert served.lexical_index() is None  # the lexical index lives in chunks.sqlite, in the folder
    served.close()


def test_a_draft_from_a_base_holds_its_vectors_and_readers_keep_the_base(
    store: GenerationStore, chunks: ChunkStore, tmp_path: Path
) -> None:
    base = written(store, None, "gen-000001", chunks, tmp_path / "gen-000001")
    store.publish("gen-000001", keep={"gen-000001", None})
    draft = written(store, base, "gen-000002", chunks, tmp_path / "gen-000002")
    assert draft.count == 3
    np.testing.assert_allclose(draft.vectors([0, 1, 2]), base.vectors([0, 1, 2]), rtol=1e-6)
    draft.delete([0])
    assert draft.count == 2
    if store.keeps_chunks:  # the served generation is untouched until the draft is published
        assert store.served() == "gen-000001" and store.open_served("gen-000001")[0].count == 3
        store.publish("gen-000002", keep={"gen-000002", "gen-000001"})
        assert store.served() == "gen-000002" and store.open_served("gen-000002")[0].count == 2


def test_numbering_past_the_generations_the_store_holds(
    config: IndexConfig, chunks: ChunkStore, tmp_path: Path
) -> None:
    store = generation_store(config)
    assert store.numbers() == []
    written(store, None, "gen-000003", chunks, tmp_path / "gen-000003")
    store.publish("gen-000003", keep={"gen-000003", None})
    # An engine holds its generations whoever wrote them: a writer with a fresh folder numbers past them.
    assert store.numbers() == ([3] if store.keeps_chunks else [])
    settings = [f"index.backend={config.backend}", f"index.name={config.name}", "index.space=cosine"]
    uri = [f"index.uri={config.uri}"] if config.uri else []
    writer = Writer(tmp_path / "fresh-home", load_config(None, [*settings, *uri]), DIM)
    with writer:
        assert writer.generation == ("gen-000004" if store.keeps_chunks else "gen-000001")


def test_discard_leaves_nothing_served(store: GenerationStore, chunks: ChunkStore, tmp_path: Path) -> None:
    draft = written(store, None, "gen-000001", chunks, tmp_path / "gen-000001")
    store.discard(draft)
    assert store.served() is None and store.numbers() == []


def test_discard_keeps_the_served_generation(store: GenerationStore, chunks: ChunkStore, tmp_path: Path) -> None:
    base = written(store, None, "gen-000001", chunks, tmp_path / "gen-000001")
    store.publish("gen-000001", keep={"gen-000001", None})
    store.discard(written(store, base, "gen-000002", chunks, tmp_path / "gen-000002"))
    assert store.numbers() == ([1] if store.keeps_chunks else [])
    assert store.served() == ("gen-000001" if store.keeps_chunks else None)


def test_reach_on_a_bad_uri_is_a_config_error_naming_index_uri(config: IndexConfig, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    bad = IndexConfig(backend=config.backend, uri=str(tmp_path / "a-file" / "m.db"), name=config.name)
    store = generation_store(bad)
    if not store.keeps_chunks:
        assert store.reach() is None  # a folder of files is always there
        return
    with pytest.raises(ConfigError, match=rf"index.uri={bad.uri}: cannot make the folder"):
        store.reach()


def test_reach_leaves_the_engine_free_for_the_next_writer(
    store: GenerationStore, chunks: ChunkStore, tmp_path: Path
) -> None:
    """`compare` calls reach before its steps open the engine themselves (a Milvus Lite file: in another process)."""
    store.reach()
    draft = written(store, None, "gen-000001", chunks, tmp_path / "gen-000001")
    assert draft.count == 3 and draft.search(vectors(1, seed=9)[0], 1)[0].size == 1
