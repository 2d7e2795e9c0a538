"""Milvus generations: one collection per generation, an alias naming the one served, chunks read from its rows.

A writer fills a new collection named after its generation while readers keep using the previous one;
publishing points the index's alias at it and drops the generations older than those kept (a newer one is
another writer's draft), so the alias never names a half-written generation and a crash mid-ingest leaves the
old one serving. Each row holds its chunk and each collection the facts a reader checks, so a node that has
only index.uri and index.name answers from the engine alone (`open_served`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from models.errors import ConfigError, IndexCorruptError, IndexLockedError, IndexMissingError
from rag.generations import GenerationStore
from rag.index import VectorIndex
from rag.index.milvus import BATCH, CHUNK_FIELDS, FACTS, METRICS, REBUILD, MilvusIndex, stored
from rag.index.milvus_client import (
    Engine,
    IndexUnavailableError,
    alias_name,
    aliased,
    collection_name,
    connect,
    disconnect,
    generation_numbers,
)
from rag.store import ChunkSource, ChunkStore, StoredChunk


class MilvusGenerations(GenerationStore):
    keeps_chunks = True

    def reach(self) -> None:
        connect(self.config)  # a ConfigError naming index.uri when Milvus cannot be reached or opened
        disconnect(self.config)  # a local .db file is open to one process at a time: free it for the steps after

    def release(self) -> None:
        disconnect(self.config)

    def prepare(self, dim: int, embedder: str) -> None:
        client, config = connect(self.config), self.config
        alias = alias_name(config.name)
        if aliased(client, alias) is None:
            return
        # Another ingest (another machine, another embedder) may serve this index name already: never replace
        # vectors of another dimension under it.
        _, served, _ = stored(client, alias)
        if served != dim:
            raise ConfigError(
                f"index.uri={config.uri} already serves index {config.name!r} with {served}-dimensional vectors, but "
                f"embedder.model {embedder!r} gives {dim}; set embedder.model back or choose another index.name"
            )

    def numbers(self) -> list[int]:
        return sorted(generation_numbers(connect(self.config), self.config.name))

    def draft(
        self, base: VectorIndex | None, generation: str, dim: int, chunks: ChunkSource, facts: dict[str, Any]
    ) -> MilvusIndex:
        # Readers keep the base's collection; the writer fills a new one, named for its generation, from it.
        client, target = connect(self.config), collection_name(self.config.name, generation)
        if client.has_collection(target):  # numbered past every collection listed: a writer elsewhere
            raise IndexLockedError(
                f"index.uri={self.config.uri}: collection {target} was created meanwhile by another writer of "
                f"index {self.config.name!r}; retry once its ingest has finished"
            )
        fresh = MilvusIndex(client, self.config, dim, target, chunks=chunks, facts=facts)
        fresh.ensure()  # created now: a writer elsewhere that numbers its generation next sees it
        if base is not None and base.count:
            with client.guard():
                _copy(client, _collection(base), fresh)
        return fresh

    def publish(self, generation: str, keep: set[str | None]) -> None:
        client, alias = connect(self.config), alias_name(self.config.name)
        target = collection_name(self.config.name, generation)
        if aliased(client, alias) is not None:
            client.alter_alias(target, alias)  # one metadata change: readers of the alias switch at once
        else:
            client.create_alias(target, alias)
        # Only what is older than every kept generation goes: a newer one is another writer's draft (or what
        # it published), and the collection the alias names now is never dropped, whoever switched it.
        oldest = min(int(g.removeprefix("gen-")) for g in keep if g)
        try:
            serving = aliased(client, alias)
            for number, name in generation_numbers(client, self.config.name).items():
                if number < oldest and name != serving:
                    client.drop_collection(name)
        except IndexUnavailableError:
            pass  # the alias is switched (published); the next publish drops what is left

    def discard(self, draft: VectorIndex) -> None:
        client, name = connect(self.config), _collection(draft)
        try:
            if name != aliased(client, alias_name(self.config.name)) and client.has_collection(name):
                client.drop_collection(name)
        except IndexUnavailableError:
            pass  # the writer is failing already (that error is raised); the next publish drops the leftover

    def served(self) -> str | None:
        collection = aliased(connect(self.config), alias_name(self.config.name))
        match = re.search(r"__gen_(\d{6,})$", collection or "")
        return f"gen-{match.group(1)}" if match else None

    def serving(self) -> MilvusIndex:
        """The index the alias names now, read from the engine alone (no generation folder, no facts checked)."""
        client, alias, config = connect(self.config), alias_name(self.config.name), self.config
        if aliased(client, alias) is None:
            raise IndexMissingError(
                f"index.uri={config.uri} serves no index {config.name!r}; run `ragtune ingest DOCS`"
            )
        rows, dim, metric = stored(client, alias)
        space = next((space for space, name in METRICS.items() if name == metric), config.space)
        return MilvusIndex(client, replace(config, space=space), dim, alias, rows)  # the space it was built with

    def open_served(self, generation: str) -> tuple[MilvusIndex, ServedChunks, dict[str, Any]]:
        config = self.config
        client, name = connect(config), collection_name(config.name, generation)
        where = f"index.uri={config.uri}, index.name={config.name!r}"
        if not client.has_collection(name):  # dropped since the alias named it (two ingests in quick succession)
            raise IndexMissingError(f"{where}: generation {generation} is no longer served; retry")
        facts = json.loads(client.describe_collection(name).get("properties", {}).get(FACTS, "null"))
        rows, dim, metric = stored(client, name)
        if not isinstance(facts, dict):
            raise IndexMissingError(
                f"{where}: collection {name} holds no chunk texts (it was built before they were stored there); "
                "rebuild with `ragtune ingest --rebuild DOCS`, or answer from the node that holds the index folder"
            )
        if facts.get("dim") != dim or METRICS.get(facts.get("space", "")) != metric:
            raise IndexCorruptError(
                f"{where}: collection {name} holds {dim}-dimensional vectors with metric {metric or 'none'}, but "
                f"its stored facts say {facts.get('dim')} dimensions in space {facts.get('space')!r}; {REBUILD}"
            )
        index = MilvusIndex(client, replace(config, space=facts["space"]), dim, name, rows)
        return index, ServedChunks(client, name), {**facts, "count": rows}


class ServedChunks:
    """A served generation's chunks, read from the rows that hold its vectors (a ChunkSource)."""

    def __init__(self, client: Engine, name: str) -> None:
        self._client, self.name = client, name

    def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        found: dict[int, StoredChunk] = {}
        for start in range(0, len(ids), BATCH):
            batch = [int(i) for i in ids[start : start + BATCH]]
            for row in self._client.query(self.name, ids=batch, output_fields=CHUNK_FIELDS):
                found[row["id"]] = StoredChunk(row["id"], *(row[field] for field in CHUNK_FIELDS))
        return found

    def lexical_index(self) -> ChunkStore | None:
        return None  # the lexical index lives in chunks.sqlite, in the generation folder

    def close(self) -> None:
        return None  # the client is shared by every index on this uri


def _collection(index: VectorIndex) -> str:
    """The collection a Milvus generation's index lives in (its base or draft is never another backend's)."""
    if not isinstance(index, MilvusIndex):
        raise TypeError(f"a Milvus generation needs a MilvusIndex, not {type(index).__name__}")
    return index.name


def _copy(client: Engine, source: str, fresh: MilvusIndex) -> None:
    """Every vector of collection `source` into `fresh`, streamed server-side: an incremental ingest re-embeds
    nothing, whatever the index size (each row's chunk comes from the writer's chunks)."""
    pages = client.query_iterator(source, batch_size=BATCH, output_fields=["vector"])
    try:
        while rows := pages.next():
            fresh.add(np.asarray([r["vector"] for r in rows], dtype=np.float32), [r["id"] for r in rows])
    finally:
        pages.close()
