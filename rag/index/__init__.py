"""The VectorIndex interface and the factory that picks its backend by `index.backend`.

A backend is one module in this package holding one VectorIndex subclass, named in INDEX_BACKENDS and
imported only when chosen, so an optional library that is missing fails only then, with the fix.
A backend keeps its state in files it writes into the folder it is given; rag/collection.py hashes
them, publishes them atomically and hands them back through `load`, which checks them first. A backend
that keeps its state in an engine (milvus) writes no files, and `load` checks the engine's copy against
the manifest instead; how an engine's generations are drafted and published is rag/generations' part.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.config import IndexConfig
from models.errors import ConfigError

# index.backend -> "module:Class"; models/config.py's IndexBackend lists the same names.
INDEX_BACKENDS = {"hnswlib": "rag.index.hnswlib:HnswIndex", "milvus": "rag.index.milvus:MilvusIndex"}
# The backend of format-1 manifests written before index.backend existed (hnswlib's m and
# ef_construction sat at the manifest's top level then): they keep opening as what they are.
_UNNAMED_BACKEND = "hnswlib"


@dataclass(frozen=True)
class IndexInfo:
    """What a generation's manifest says its index holds: checked against the files before they are read."""

    space: str
    dim: int
    count: int  # live vectors
    deleted: int  # vectors marked deleted but still stored
    params: dict[str, Any] = field(default_factory=dict)  # the backend's own section of the manifest


class VectorIndex(ABC):
    """Vectors under int64 labels, searched by similarity (higher is closer).

    A label is added once and never reused after a delete (the chunk store guarantees it). Searches may run
    from several threads at once; add, delete, save and compaction need the one writer to themselves.
    """

    space: str
    dim: int

    @classmethod
    @abstractmethod
    def create(cls, config: IndexConfig, dim: int, capacity: int = 1024) -> VectorIndex:
        """An empty index with config's space and build settings, room for `capacity` vectors before growing."""

    @classmethod
    @abstractmethod
    def verify(cls, folder: Path, info: IndexInfo) -> None:
        """Raise IndexCorruptError unless the files in `folder` hold what `info` says, without the library
        reading them (a damaged file can crash it or be mis-read silently)."""

    @classmethod
    def load(cls, folder: Path, info: IndexInfo, config: IndexConfig) -> VectorIndex:
        """The index saved in `folder`, with config's query-time settings; verified before it is read."""
        cls.verify(folder, info)
        return cls._read(folder, info, config)

    @classmethod
    @abstractmethod
    def _read(cls, folder: Path, info: IndexInfo, config: IndexConfig) -> VectorIndex:
        """Read files that `verify` has accepted."""

    @abstractmethod
    def save(self, folder: Path) -> dict[str, Any]:
        """Write the index's files into `folder`; return its manifest section, whose "files" names them."""

    @property
    @abstractmethod
    def count(self) -> int:
        """Live vectors (deleted ones excluded)."""

    @property
    @abstractmethod
    def deleted(self) -> int:
        """Vectors deleted but still stored (0 for a backend that removes them at once)."""

    @abstractmethod
    def add(self, vectors: np.ndarray, labels: np.ndarray | list[int]) -> None:
        """Store float32 `vectors` (n x dim) under new `labels`, growing as needed."""

    @abstractmethod
    def delete(self, labels: list[int]) -> None:
        """Make `labels` unfindable."""

    @abstractmethod
    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """int64 labels and float32 scores (higher is closer) of the min(k, count) nearest live vectors."""

    @abstractmethod
    def vectors(self, labels: list[int]) -> np.ndarray:
        """The stored float32 vectors of live `labels` (cosine spaces may store them unit-length)."""

    # Compaction: hnswlib keeps deleted vectors in its graph until it is rebuilt without them.
    @property
    def needs_compaction(self) -> bool:
        """Whether deleted vectors cost enough memory and search time to rebuild without them."""
        return False

    def compacted(self, live: list[int]) -> VectorIndex:
        """An index holding only the `live` labels (this one, where deletes already free their space)."""
        return self


def index_class(backend: str) -> type[VectorIndex]:
    """The VectorIndex class registered for `backend`, its module imported now."""
    try:
        target = INDEX_BACKENDS[backend]
    except KeyError:
        raise ConfigError(
            f"index.backend: unknown backend {backend!r}; choose one of {', '.join(INDEX_BACKENDS)}"
        ) from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def create_index(config: IndexConfig, dim: int, capacity: int = 1024) -> VectorIndex:
    """An empty index of config's `index.backend`."""
    return index_class(config.backend).create(config, dim, capacity)


def manifest_section(manifest: dict[str, Any]) -> dict[str, Any]:
    """The index's section of a generation manifest ({"backend": ..., "files": [...], build settings})."""
    return manifest.get("index", {"backend": _UNNAMED_BACKEND})


def missing_library(backend: str, requirement: str) -> ConfigError:
    """The error a backend module raises on import when the library it wraps is not installed."""
    return ConfigError(
        f"index.backend={backend} needs a library that is not installed; `pip install {requirement}` "
        "or choose another index.backend"
    )
