"""Milvus behind VectorIndex: one collection per index generation, its rows checked against the manifest.

`index.uri` is a local .db file (Milvus Lite, embedded in this process) or a server address; the same
client code serves both. Which collection a generation fills, and the alias naming the one served, are
rag/generations/milvus.py's part. Engine calls fail as IndexUnavailableError (rag/index/milvus_client.py).
Deletes free their space at once (the engine compacts its segments itself): `deleted` is always 0.
Each row also holds its chunk (path, ordinal, locator, text, context) and each collection the facts a reader
checks (embedder, dimension, space), so a node that has only index.uri and index.name can answer.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from models.config import IndexConfig
from models.errors import IndexCorruptError, InputError
from rag.index import IndexInfo, VectorIndex, missing_library
from rag.store import ChunkSource, StoredChunk

try:
    from pymilvus import DataType, MilvusClient
except ImportError as exc:  # only a config that chooses index.backend=milvus gets here
    raise missing_library("milvus", "'ragtune[milvus]' (pymilvus==3.0.2 milvus-lite==3.2.2)") from exc

from rag.index.milvus_client import Engine, IndexUnavailableError, alias_name, connect

METRICS = {"cosine": "COSINE", "ip": "IP", "l2": "L2"}
BATCH = 4096  # rows per insert or id query: well under the engine's message size limit at 1024 dims
REBUILD = "rebuild with `ragtune ingest --rebuild DOCS`"
# VARCHAR's largest max_length: a server counts it in UTF-8 bytes (Milvus Lite in characters); the stricter holds.
_VARCHAR = 65535
# Waits between retries of loading a just-flushed collection (MilvusIndex._load_sealed): 3.5 s in all.
LOAD_RETRY_DELAYS_S = (0.1, 0.2, 0.4, 0.8, 2.0)
_TEXT_FIELDS = ("path", "locator", "text", "context")
CHUNK_FIELDS = ["path", "ordinal", "locator", "text", "context"]
FACTS = "ragtune.facts"  # the collection property holding what a reader checks: embedder, dim, space, ...


def stored(client: Engine, name: str) -> tuple[int, int, str]:
    """Rows, dimension and metric of collection `name` as the engine reports them."""
    fields = client.describe_collection(name)["fields"]
    dim = next((int(f["params"]["dim"]) for f in fields if f["type"] == DataType.FLOAT_VECTOR), -1)
    metrics = [client.describe_index(name, index).get("metric_type", "") for index in client.list_indexes(name)]
    metric = metrics[0] if metrics else ""
    client.load_collection(name)
    rows = client.query(name, filter="", output_fields=["count(*)"])[0]["count(*)"]
    return int(rows), dim, str(metric)


class MilvusIndex(VectorIndex):
    def __init__(
        self,
        client: Engine,
        config: IndexConfig,
        dim: int,
        name: str,
        count: int = 0,
        chunks: ChunkSource | None = None,
        facts: dict[str, Any] | None = None,
    ) -> None:
        self._client, self._config, self.space, self.dim = client, config, config.space, dim
        self.name, self._count = name, count  # the collection, created on first use
        self._exists = count > 0 or client.has_collection(name)
        # A writer's chunks, stored with each added vector, and the generation's facts, stored with the collection.
        self._chunks, self._facts = chunks, facts or {}

    @classmethod
    def create(cls, config: IndexConfig, dim: int, capacity: int = 1024) -> MilvusIndex:
        # A scratch name: a writer's generation gets its own collection (rag/generations/milvus.py); the engine
        # sizes itself (no capacity).
        return cls(connect(config), config, dim, f"{alias_name(config.name)}__scratch_{uuid.uuid4().hex[:12]}")

    @classmethod
    def verify(cls, folder: Path, info: IndexInfo) -> None:
        name = info.params.get("collection")
        if not isinstance(name, str) or not re.fullmatch(
            r"ragtune_\w+__(gen_\d{6,}|scratch_[0-9a-f]{12})", name, flags=re.ASCII
        ):
            raise IndexCorruptError(f"{folder}: its manifest names no Milvus collection; {REBUILD}")

    @classmethod
    def load(cls, folder: Path, info: IndexInfo, config: IndexConfig) -> MilvusIndex:
        cls.verify(folder, info)
        name, client = info.params["collection"], connect(config)
        if not client.has_collection(name):
            raise IndexCorruptError(f"{folder}: index.uri={config.uri} has no collection {name}; {REBUILD}")
        rows, dim, metric = stored(client, name)
        if (rows, dim) != (info.count, info.dim):
            raise IndexCorruptError(
                f"collection {name} at index.uri={config.uri} holds {rows} vectors of {dim} dimensions but its "
                f"manifest says {info.count} of {info.dim}; {REBUILD}"
            )
        if metric != METRICS[info.space]:
            raise IndexCorruptError(f"collection {name} uses metric {metric}, not {info.space}; {REBUILD}")
        return cls._read(folder, info, config)

    @classmethod
    def _read(cls, folder: Path, info: IndexInfo, config: IndexConfig) -> MilvusIndex:
        return cls(connect(config), config, info.dim, info.params["collection"], info.count)

    def save(self, folder: Path) -> dict[str, Any]:
        self.ensure()
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

    def ensure(self) -> None:
        """Create the collection now if it is not there yet (a writer elsewhere then sees its name taken)."""
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
        params.add_index("vector", index_type="HNSW", metric_type=METRICS[self.space], params=build)
        facts = {FACTS: json.dumps(self._facts)} if self._facts else {}
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
        self.ensure()
        vectors, labels = np.asarray(vectors, dtype=np.float32), np.asarray(labels, dtype=np.int64)
        for start in range(0, len(labels), BATCH):
            batch = labels[start : start + BATCH].tolist()
            chunks = self._chunks.chunks(batch) if self._chunks is not None else {}
            rows = [
                {"id": label, "vector": vector, **_chunk_fields(chunks.get(label))}
                for label, vector in zip(batch, vectors[start : start + BATCH])
            ]
            self._client.insert(self.name, rows)
        self._count += len(labels)

    def delete(self, labels: list[int]) -> None:
        if not labels or not self._exists:
            return
        for start in range(0, len(labels), BATCH):
            batch = [int(label) for label in labels[start : start + BATCH]]
            # Only ids stored here count: the count must stay what the engine holds, or the next load refuses it.
            found = [row["id"] for row in self._client.query(self.name, ids=batch, output_fields=["id"])]
            if found:
                self._client.delete(self.name, ids=found)
                self._count -= len(found)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.count)
        if k <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        params = {"metric_type": METRICS[self.space], "params": {"ef": max(self._config.ef_search, k)}}
        vector = np.asarray(query, dtype=np.float32).reshape(-1)
        hits = self._client.search(self.name, data=[vector], limit=k, search_params=params, output_fields=[])[0]
        labels = np.array([hit["id"] for hit in hits], dtype=np.int64)
        distances = np.array([hit["distance"] for hit in hits], dtype=np.float32)
        # COSINE and IP come back as similarities; L2 as the squared distance, negated so higher is closer.
        return labels, (-distances if self.space == "l2" else distances)

    def vectors(self, labels: list[int]) -> np.ndarray:
        found: dict[int, list[float]] = {}
        for start in range(0, len(labels), BATCH):
            ids = [int(label) for label in labels[start : start + BATCH]]
            found.update(
                (row["id"], row["vector"]) for row in self._client.query(self.name, ids=ids, output_fields=["vector"])
            )
        return np.asarray([found[int(label)] for label in labels], dtype=np.float32).reshape(len(labels), self.dim)


def _chunk_fields(chunk: StoredChunk | None) -> dict[str, Any]:
    """A chunk's scalar fields; a text longer than a field holds is refused, never cut (a source shows it whole)."""
    if chunk is None:  # vectors added without a writer's chunks (the contract tests): no chunk to serve
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
