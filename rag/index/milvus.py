"""Milvus behind VectorIndex: one collection per index generation, an alias naming the one served.

`index.uri` is a local .db file (Milvus Lite, embedded in this process) or a server address; the same
client code serves both. A writer fills a new collection named after its generation while readers keep
using the previous one; publishing points the index's alias at it and drops the generations older than those
kept (a newer one is another writer's draft), so the alias never names a half-written generation and a crash
mid-ingest leaves the old one serving. Engine calls fail as IndexUnavailableError (rag/index/milvus_client.py).
Deletes free their space at once (the engine compacts its segments itself): `deleted` is always 0.
Each row also holds its chunk (path, ordinal, locator, text, context) and each collection the facts a reader
checks (embedder, dimension, space), so a node that has only index.uri and index.name can answer (`chunks`).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from models.config import IndexConfig
from models.errors import ConfigError, IndexCorruptError, IndexLockedError, IndexMissingError, InputError
from rag.index import IndexInfo, VectorIndex, missing_library
from rag.store import ChunkStore, StoredChunk

try:
    from pymilvus import DataType, MilvusClient
except ImportError as exc:  # only a config that chooses index.backend=milvus gets here
    raise missing_library("milvus", "'ragtune[milvus]' (pymilvus==3.0.2 milvus-lite==3.2.2)") from exc

from rag.index.milvus_client import (  # noqa: F401  (connect and disconnect: this backend's public names)
    Engine,
    IndexUnavailableError,
    alias_name,
    aliased,
    collection_name,
    connect,
    disconnect,
    generation_numbers,
)

_METRICS = {"cosine": "COSINE", "ip": "IP", "l2": "L2"}
_BATCH = 4096  # rows per insert or id query: well under the engine's message size limit at 1024 dims
_REBUILD = "rebuild with `ragtune ingest --rebuild DOCS`"
# VARCHAR's largest max_length: a server counts it in UTF-8 bytes (Milvus Lite in characters); the stricter holds.
_VARCHAR = 65535
# Waits between retries of loading a just-flushed collection (MilvusIndex._load_sealed): 3.5 s in all.
LOAD_RETRY_DELAYS_S = (0.1, 0.2, 0.4, 0.8, 2.0)
_TEXT_FIELDS = ("path", "locator", "text", "context")
_CHUNK_FIELDS = ["path", "ordinal", "locator", "text", "context"]
_FACTS = "ragtune.facts"  # the collection property holding what a reader checks: embedder, dim, space, ...


def _stored(client: Engine, name: str) -> tuple[int, int, str]:
    """Rows, dimension and metric of collection `name` as the engine reports them."""
    fields = client.describe_collection(name)["fields"]
    dim = next((int(f["params"]["dim"]) for f in fields if f["type"] == DataType.FLOAT_VECTOR), -1)
    metrics = [client.describe_index(name, index).get("metric_type", "") for index in client.list_indexes(name)]
    metric = metrics[0] if metrics else ""
    client.load_collection(name)
    rows = client.query(name, filter="", output_fields=["count(*)"])[0]["count(*)"]
    return int(rows), dim, str(metric)


class MilvusIndex(VectorIndex):
    def __init__(self, client: Engine, config: IndexConfig, dim: int, name: str, count: int = 0) -> None:
        self._client, self._config, self.space, self.dim = client, config, config.space, dim
        self.name, self._count = name, count  # the collection, created on first use
        self._exists = count > 0 or client.has_collection(name)
        self._store: ChunkStore | None = None  # a writer's chunks, stored with each added vector
        self._facts: dict[str, Any] = {}

    @classmethod
    def create(cls, config: IndexConfig, dim: int, capacity: int = 1024) -> MilvusIndex:
        # A scratch name until a writer gives it a generation (draft); the engine sizes itself (no capacity).
        return cls(connect(config), config, dim, f"{alias_name(config.name)}__scratch_{uuid.uuid4().hex[:12]}")

    @classmethod
    def reach(cls, config: IndexConfig) -> None:
        connect(config)  # a ConfigError naming index.uri when Milvus cannot be reached or opened
        disconnect(config)  # a local .db file is open to one process at a time: free it for the steps that follow

    @classmethod
    def prepare(cls, config: IndexConfig, dim: int, embedder: str) -> None:
        client = connect(config)
        alias = alias_name(config.name)
        if aliased(client, alias) is None:
            return
        # Another ingest (another machine, another embedder) may serve this index name already: never replace
        # vectors of another dimension under it.
        _, served, _ = _stored(client, alias)
        if served != dim:
            raise ConfigError(
                f"index.uri={config.uri} already serves index {config.name!r} with {served}-dimensional vectors, but "
                f"embedder.model {embedder!r} gives {dim}; set embedder.model back or choose another index.name"
            )

    @classmethod
    def serving(cls, config: IndexConfig) -> MilvusIndex:
        """The generation index.name's alias serves now, read from the engine alone (no generation folder)."""
        client, alias = connect(config), alias_name(config.name)
        if aliased(client, alias) is None:
            raise IndexMissingError(
                f"index.uri={config.uri} serves no index {config.name!r}; run `ragtune ingest DOCS`"
            )
        rows, dim, metric = _stored(client, alias)
        space = next((space for space, name in _METRICS.items() if name == metric), config.space)
        return cls(client, replace(config, space=space), dim, alias, rows)  # the space it was built with

    @classmethod
    def served(cls, config: IndexConfig) -> str | None:
        collection = aliased(connect(config), alias_name(config.name))
        match = re.search(r"__gen_(\d{6,})$", collection or "")
        return f"gen-{match.group(1)}" if match else None

    @classmethod
    def open_served(cls, config: IndexConfig, generation: str) -> tuple[MilvusIndex, dict[str, Any]]:
        client, name = connect(config), collection_name(config.name, generation)
        where = f"index.uri={config.uri}, index.name={config.name!r}"
        if not client.has_collection(name):  # dropped since the alias named it (two ingests in quick succession)
            raise IndexMissingError(f"{where}: generation {generation} is no longer served; retry")
        facts = json.loads(client.describe_collection(name).get("properties", {}).get(_FACTS, "null"))
        rows, dim, metric = _stored(client, name)
        if not isinstance(facts, dict):
            raise IndexMissingError(
                f"{where}: collection {name} holds no chunk texts (it was built before they were stored there); "
                "rebuild with `ragtune ingest --rebuild DOCS`, or answer from the node that holds the index folder"
            )
        if facts.get("dim") != dim or _METRICS.get(facts.get("space", "")) != metric:
            raise IndexCorruptError(
                f"{where}: collection {name} holds {dim}-dimensional vectors with metric {metric or 'none'}, but "
                f"its stored facts say {facts.get('dim')} dimensions in space {facts.get('space')!r}; {_REBUILD}"
            )
        return cls(client, replace(config, space=facts["space"]), dim, name, rows), {**facts, "count": rows}

    def attach(self, store: ChunkStore, facts: dict[str, Any]) -> None:
        self._store, self._facts = store, facts

    def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        found: dict[int, StoredChunk] = {}
        for start in range(0, len(ids), _BATCH):
            batch = [int(i) for i in ids[start : start + _BATCH]]
            for row in self._client.query(self.name, ids=batch, output_fields=_CHUNK_FIELDS):
                found[row["id"]] = StoredChunk(row["id"], *(row[field] for field in _CHUNK_FIELDS))
        return found

    def close(self) -> None:
        return None  # the client is shared by every index on this uri

    @classmethod
    def verify(cls, folder: Path, info: IndexInfo) -> None:
        name = info.params.get("collection")
        if not isinstance(name, str) or not re.fullmatch(
            r"ragtune_\w+__(gen_\d{6,}|scratch_[0-9a-f]{12})", name, flags=re.ASCII
        ):
            raise IndexCorruptError(f"{folder}: its manifest names no Milvus collection; {_REBUILD}")

    @classmethod
    def load(cls, folder: Path, info: IndexInfo, config: IndexConfig) -> MilvusIndex:
        cls.verify(folder, info)
        name, client = info.params["collection"], connect(config)
        if not client.has_collection(name):
            raise IndexCorruptError(f"{folder}: index.uri={config.uri} has no collection {name}; {_REBUILD}")
        rows, dim, metric = _stored(client, name)
        if (rows, dim) != (info.count, info.dim):
            raise IndexCorruptError(
                f"collection {name} at index.uri={config.uri} holds {rows} vectors of {dim} dimensions but its "
                f"manifest says {info.count} of {info.dim}; {_REBUILD}"
            )
        if metric != _METRICS[info.space]:
            raise IndexCorruptError(f"collection {name} uses metric {metric}, not {info.space}; {_REBUILD}")
        return cls._read(folder, info, config)

    @classmethod
    def _read(cls, folder: Path, info: IndexInfo, config: IndexConfig) -> MilvusIndex:
        return cls(connect(config), config, info.dim, info.params["collection"], info.count)

    def save(self, folder: Path) -> dict[str, Any]:
        self._ensure()
        self._client.flush(self.name)  # sealed segments: durable before the manifest names the collection
        # Reloaded, searches use the HNSW index built on the sealed segments (on Milvus Lite, searches of a
        # collection loaded while its rows were inserted scan them instead: 10-100x slower).
        self._client.release_collection(self.name)
        self._load_sealed()
        return {
            "files": [],
            "collection": self.name,
            "m": self._config.m,
            "ef_construction": self._config.ef_construction,
        }

    def _load_sealed(self) -> None:
        """Load the collection just flushed. Milvus Lite writes a sealed segment's HNSW file in the background;
        a load that reads it half-written fails (faiss: "read error ... Resource temporarily unavailable"), so
        the load is retried for a few seconds before its error stands (a server that is down still fails)."""
        for delay in LOAD_RETRY_DELAYS_S:
            try:
                self._client.load_collection(self.name)
                return
            except IndexUnavailableError:
                time.sleep(delay)
        self._client.load_collection(self.name)

    @classmethod
    def generations(cls, config: IndexConfig) -> list[int]:
        return sorted(generation_numbers(connect(config), config.name))

    def draft(self, generation: str) -> MilvusIndex:
        # Readers keep this collection; the writer fills a new one, named for its generation, from it.
        target = collection_name(self._config.name, generation)
        if self._client.has_collection(target):  # numbered past every collection listed: a writer elsewhere
            raise IndexLockedError(
                f"index.uri={self._config.uri}: collection {target} was created meanwhile by another writer of "
                f"index {self._config.name!r}; retry once its ingest has finished"
            )
        fresh = MilvusIndex(self._client, self._config, self.dim, target)
        if self._store is not None:
            fresh.attach(self._store, self._facts)  # the copies take their chunks from the writer's store
        fresh._ensure()  # created now: a writer elsewhere that numbers its generation next sees it
        if self._exists and self.count:
            with self._client.guard():
                self._copy_into(fresh)
        if self.name.split("__")[-1].startswith("scratch_"):
            self.discard()
        return fresh

    def _copy_into(self, fresh: MilvusIndex) -> None:
        # Server-side vectors, streamed: an incremental ingest re-embeds nothing, whatever the index size.
        pages = self._client.query_iterator(self.name, batch_size=_BATCH, output_fields=["vector"])
        try:
            while rows := pages.next():
                fresh.add(np.asarray([r["vector"] for r in rows], dtype=np.float32), [r["id"] for r in rows])
        finally:
            pages.close()

    @classmethod
    def publish(cls, config: IndexConfig, generation: str, keep: set[str | None]) -> None:
        client, alias = connect(config), alias_name(config.name)
        target = collection_name(config.name, generation)
        if aliased(client, alias) is not None:
            client.alter_alias(target, alias)  # one metadata change: readers of the alias switch at once
        else:
            client.create_alias(target, alias)
        # Only what is older than every kept generation goes: a newer one is another writer's draft (or what
        # it published), and the collection the alias names now is never dropped, whoever switched it.
        oldest = min(int(g.removeprefix("gen-")) for g in keep if g)
        try:
            serving = aliased(client, alias)
            for number, name in generation_numbers(client, config.name).items():
                if number < oldest and name != serving:
                    client.drop_collection(name)
        except IndexUnavailableError:
            pass  # the alias is switched (published); the next publish drops what is left

    def discard(self) -> None:
        try:
            serving = aliased(self._client, alias_name(self._config.name))
            if self.name != serving and self._client.has_collection(self.name):
                self._client.drop_collection(self.name)
        except IndexUnavailableError:
            pass  # the writer is failing already (that error is raised); the next publish drops the leftover
        self._exists, self._count = False, 0

    def _ensure(self) -> None:
        if self._exists:
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("ordinal", DataType.INT64)
        for field in _TEXT_FIELDS:
            schema.add_field(field, DataType.VARCHAR, max_length=_VARCHAR)
        params = self._client.prepare_index_params()
        build = {"M": self._config.m, "efConstruction": self._config.ef_construction}
        params.add_index("vector", index_type="HNSW", metric_type=_METRICS[self.space], params=build)
        facts = {_FACTS: json.dumps(self._facts)} if self._facts else {}
        self._client.create_collection(
            self.name, schema=schema, index_params=params, consistency_level="Strong", properties=facts
        )
        self._exists = True

    @property
    def count(self) -> int:
        return self._count

    @property
    def deleted(self) -> int:
        return 0

    def add(self, vectors: np.ndarray, labels: np.ndarray | list[int]) -> None:
        self._ensure()
        vectors, labels = np.asarray(vectors, dtype=np.float32), np.asarray(labels, dtype=np.int64)
        for start in range(0, len(labels), _BATCH):
            batch = labels[start : start + _BATCH].tolist()
            chunks = self._store.chunks(batch) if self._store is not None else {}
            rows = [
                {"id": label, "vector": vector, **_chunk_fields(chunks.get(label))}
                for label, vector in zip(batch, vectors[start : start + _BATCH])
            ]
            self._client.insert(self.name, rows)
        self._count += len(labels)

    def delete(self, labels: list[int]) -> None:
        if not labels or not self._exists:
            return
        for start in range(0, len(labels), _BATCH):
            batch = [int(label) for label in labels[start : start + _BATCH]]
            # Only ids stored here count: the count must stay what the engine holds, or the next load refuses it.
            found = [row["id"] for row in self._client.query(self.name, ids=batch, output_fields=["id"])]
            if found:
                self._client.delete(self.name, ids=found)
                self._count -= len(found)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.count)
        if k <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        params = {"metric_type": _METRICS[self.space], "params": {"ef": max(self._config.ef_search, k)}}
        vector = np.asarray(query, dtype=np.float32).reshape(-1)
        hits = self._client.search(self.name, data=[vector], limit=k, search_params=params, output_fields=[])[0]
        labels = np.array([hit["id"] for hit in hits], dtype=np.int64)
        distances = np.array([hit["distance"] for hit in hits], dtype=np.float32)
        # COSINE and IP come back as similarities; L2 as the squared distance, negated so higher is closer.
        return labels, (-distances if self.space == "l2" else distances)

    def vectors(self, labels: list[int]) -> np.ndarray:
        found: dict[int, list[float]] = {}
        for start in range(0, len(labels), _BATCH):
            ids = [int(label) for label in labels[start : start + _BATCH]]
            found.update(
                (row["id"], row["vector"]) for row in self._client.query(self.name, ids=ids, output_fields=["vector"])
            )
        return np.asarray([found[int(label)] for label in labels], dtype=np.float32).reshape(len(labels), self.dim)


def _chunk_fields(chunk: StoredChunk | None) -> dict[str, Any]:
    """A chunk's scalar fields; a text longer than a field holds is refused, never cut (a source shows it whole)."""
    if chunk is None:  # vectors added without a writer's store (the seam's own tests): no chunk to serve
        return {"path": "", "ordinal": -1, "locator": "", "text": "", "context": ""}
    fields = {"path": chunk.path, "ordinal": chunk.ordinal, "locator": chunk.locator, "text": chunk.text}
    fields["context"] = chunk.context
    for name in _TEXT_FIELDS:
        size = len(fields[name].encode("utf-8"))
        if size > _VARCHAR:
            raise InputError(
                f"{chunk.path}: chunk {chunk.ordinal}'s {name} is {size} bytes, more than the {_VARCHAR} a Milvus "
                "text field holds; lower rag.chunk_tokens, split the document, or set index.backend=hnswlib"
            )
    return fields
