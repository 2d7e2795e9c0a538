"""Milvus generations shared by several writers, and a failing engine: numbering past the engine's collections,
publishing that never drops a newer draft or the served one, typed errors when Milvus fails, exact counts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pymilvus import MilvusException

from models.config import Config, load_config
from models.errors import IndexCorruptError, IndexStateError
from rag.collection import Writer, current_generation, expectation, open_snapshot
from rag.generations.milvus import MilvusGenerations
from rag.index import milvus_client
from rag.index.milvus import MilvusIndex, stored
from rag.index.milvus_client import IndexUnavailableError, alias_name, collection_name, connect, disconnect

DIM = 8


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Config]:
    config = load_config(None, ["index.backend=milvus", f"index.uri={tmp_path / 'milvus.db'}", "index.name=lib"])
    yield config
    disconnect(config.index)  # the next test's file is another one; this one's server stops


def collections(config: Config) -> set[str]:
    prefix = alias_name(config.index.name) + "__"
    return {name for name in connect(config.index).list_collections() if name.startswith(prefix)}


def named(*generations: str) -> set[str]:
    return {collection_name("lib", g) for g in generations}


def publish(root: Path, config: Config) -> str:
    """One (empty) generation written and published from the index folder `root`."""
    writer = Writer(root, config, DIM)
    with writer:
        return writer.commit()


def filled(config: Config, rows: int) -> MilvusIndex:
    index = MilvusIndex.create(config.index, DIM)
    index.add(np.random.default_rng(0).standard_normal((rows, DIM)).astype(np.float32), list(range(1, rows + 1)))
    return index


def test_a_fresh_folder_numbers_past_the_engine_and_keeps_the_served_collection(tmp_path: Path, config) -> None:
    """A lost RAGTUNE_HOME, or a second node: generation 1 is served from the engine while gen 2 is drafted."""
    assert publish(tmp_path / "home", config) == "gen-000001"
    writer = Writer(tmp_path / "fresh-home", config, DIM)
    with writer:
        assert writer.generation == "gen-000002"
        assert MilvusGenerations(config.index).served() == "gen-000001"
        assert collections(config) == named("gen-000001", "gen-000002")
        assert writer.commit() == "gen-000002"
    assert MilvusGenerations(config.index).served() == "gen-000002"
    assert current_generation(tmp_path / "fresh-home") == "gen-000002"


def test_publishing_never_drops_another_writers_newer_draft(tmp_path: Path, config) -> None:
    assert publish(tmp_path / "a", config) == "gen-000001"
    other = Writer(tmp_path / "b", config, DIM)
    other.__enter__()  # another node's ingest, in progress
    assert other.generation == "gen-000002"
    assert publish(tmp_path / "a", config) == "gen-000003"  # numbered past the draft, which it keeps
    assert collections(config) == named("gen-000001", "gen-000002", "gen-000003")
    assert other.commit() == "gen-000002"  # drops only what is older than the generations it keeps
    other.__exit__(None, None, None)
    assert collections(config) == named("gen-000002", "gen-000003")
    assert MilvusGenerations(config.index).served() == "gen-000002"


def test_a_failed_publish_is_typed_and_leaves_folder_and_alias_on_the_old_generation(
    tmp_path: Path, config, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "home"
    publish(root, config)
    client = milvus_client.connect(config.index)._client  # this index's connection (other tests keep theirs open)

    def lost(*args, **kwargs):  # the engine goes away just as the alias is switched
        raise MilvusException(code=2, message="connection lost")

    writer = Writer(root, config, DIM)
    with pytest.raises(IndexUnavailableError, match=r"index.uri=.*milvus.db: the Milvus call failed \(connection lost"):
        with writer:
            monkeypatch.setattr(client, "alter_alias", lost)
            writer.commit()
    monkeypatch.undo()
    assert current_generation(root) == "gen-000001" and MilvusGenerations(config.index).served() == "gen-000001"
    assert collections(config) == named("gen-000001")  # the unpublished draft was dropped
    assert publish(root, config) == "gen-000003"  # the next ingest publishes, past the abandoned folder
    assert MilvusGenerations(config.index).served() == current_generation(root) == "gen-000003"
    assert sorted(p.name for p in root.glob("gen-*")) == ["gen-000001", "gen-000003"]
    open_snapshot(root, expectation(config, DIM)).close()


def test_a_server_gone_down_is_a_typed_index_error_naming_index_uri(config) -> None:
    index = filled(config, 5)
    index.save(Path("unused"))  # files: none; seals the collection
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(str(Path(config.index.uri)))  # the engine stops; the client stays
    calls = [
        lambda: index.search(np.ones(DIM, dtype=np.float32), 3),
        lambda: index.add(np.ones((1, DIM), dtype=np.float32), [99]),
        lambda: index.delete([1]),
        lambda: index.save(Path("unused")),
        lambda: MilvusGenerations(config.index).publish("gen-000001", keep={"gen-000001"}),
        lambda: MilvusGenerations(config.index).serving(),
    ]
    for call in calls:
        # An index error: `ragtune serve` answers it with 503 index_unavailable, not a 500.
        with pytest.raises(IndexUnavailableError, match=rf"index.uri={config.index.uri}: the Milvus call failed"):
            call()
    assert issubclass(IndexUnavailableError, IndexStateError)


def test_concurrent_connects_share_one_client(config) -> None:
    start, clients = threading.Barrier(6), []

    def open_one() -> None:
        start.wait()
        clients.append(connect(config.index)._client)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(clients) == 6 and len({id(client) for client in clients}) == 1


def test_deleting_absent_ids_keeps_the_count_what_the_engine_holds(config) -> None:
    index = filled(config, 4)
    index.delete([2, 3, 999, 1000])
    assert index.count == 2
    index.save(Path("unused"))
    # What a reader's load compares with the manifest's count: the rows the engine holds.
    assert stored(connect(config.index), index.name)[0] == index.count == 2


def test_stored_facts_of_another_dimension_are_named(config) -> None:
    name = collection_name("lib", "gen-000001")
    facts = {"format": 1, "embedder": "minilm-l6", "dim": 4, "space": "cosine", "contextual": False}
    index = MilvusIndex(connect(config.index), config.index, DIM, name, facts=facts)  # no chunks: vectors alone
    index.add(np.ones((2, DIM), dtype=np.float32), [1, 2])
    index.save(Path("unused"))
    with pytest.raises(IndexCorruptError, match=r"holds 8-dimensional vectors with metric COSINE, but its stored "):
        MilvusGenerations(config.index).open_served("gen-000001")


def test_a_load_that_reads_a_half_written_segment_index_is_retried(config, monkeypatch) -> None:
    # Milvus Lite writes a sealed segment's index file in the background; a load that reads it half-written
    # fails once or twice under load. The first two loads here fail as such a load does; the third succeeds.
    index = filled(config, 5)
    real, calls = index._client.load_collection, []

    def flaky(name: str) -> None:
        calls.append(name)
        if len(calls) <= 2:
            raise IndexUnavailableError(f"index.uri={config.index.uri}: the Milvus call failed (read error ...)")
        real(name)

    monkeypatch.setattr(index._client, "load_collection", flaky)
    monkeypatch.setattr("rag.index.milvus.LOAD_RETRY_DELAYS_S", (0.01,) * 5)
    assert index.save(Path("unused"))["collection"] == index.name and len(calls) == 3
    assert len(index.search(np.ones(DIM, dtype=np.float32), 3)[0]) == 3  # loaded: it searches
    # A failure that lasts is not hidden: after the retries (one load each, then a last one) the error stands.
    calls.clear()

    def down(name: str) -> None:
        calls.append(name)
        raise IndexUnavailableError(f"index.uri={config.index.uri}: the Milvus call failed (server down)")

    monkeypatch.setattr(index._client, "load_collection", down)
    with pytest.raises(IndexUnavailableError, match="server down"):
        index.save(Path("unused"))
    assert len(calls) == 6
