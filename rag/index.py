"""The vector index backend: hnswlib, behind load / add / delete / search / count / save.

hnswlib is not safe to read from a file it did not write or with a dimension it was not built with
(it can crash or silently mis-read), so `load` is only ever called after the manifest check in
rag/collection.py has passed.
"""

from __future__ import annotations

import struct
from pathlib import Path

import hnswlib
import numpy as np

_GROWTH = 1.5
_HEADER = struct.Struct(
    "<6Q"
)  # offsetLevel0, max_elements, cur_element_count, size_per_element, label_offset, offsetData


def read_header(path: Path) -> tuple[int, int]:
    """(dimension, stored element count) from an hnswlib file's header, read without hnswlib.

    The header's label offset minus its data offset is the vector size in bytes (float32), so a file
    built with another dimension is caught before hnswlib would mis-read it.
    """
    with open(path, "rb") as handle:
        raw = handle.read(_HEADER.size)
    if len(raw) < _HEADER.size:
        raise ValueError("shorter than an hnswlib header")
    _, max_elements, count, _, label_offset, data_offset = _HEADER.unpack(raw)
    if label_offset <= data_offset or (label_offset - data_offset) % 4 or count > max_elements:
        raise ValueError("not an hnswlib header")
    return (label_offset - data_offset) // 4, count


class VectorIndex:
    def __init__(self, space: str, dim: int, m: int = 16, ef_construction: int = 200, ef_search: int = 64) -> None:
        self.space, self.dim = space, dim
        self.ef_search = ef_search
        self._index = hnswlib.Index(space=space, dim=dim)
        self._m, self._ef_construction = m, ef_construction
        self._deleted = 0

    @classmethod
    def create(
        cls, space: str, dim: int, m: int, ef_construction: int, ef_search: int, capacity: int = 1024
    ) -> VectorIndex:
        index = cls(space, dim, m, ef_construction, ef_search)
        index._index.init_index(
            max_elements=capacity, M=m, ef_construction=ef_construction, allow_replace_deleted=False
        )
        return index

    @classmethod
    def load(cls, path: Path, space: str, dim: int, ef_search: int, deleted: int) -> VectorIndex:
        index = cls(space, dim, ef_search=ef_search)
        index._index.load_index(str(path))
        index._deleted = deleted
        return index

    @property
    def count(self) -> int:
        """Live vectors (deleted ones excluded)."""
        return self._index.get_current_count() - self._deleted

    @property
    def deleted(self) -> int:
        return self._deleted

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        # Grow geometrically so a long ingest resizes a few times, not once per batch.
        needed = self._index.get_current_count() + len(labels)
        if needed > self._index.get_max_elements():
            self._index.resize_index(max(needed, int(self._index.get_max_elements() * _GROWTH)))
        self._index.add_items(np.asarray(vectors, dtype=np.float32), np.asarray(labels, dtype=np.int64))

    def delete(self, labels: list[int]) -> None:
        for label in labels:
            self._index.mark_deleted(int(label))
        self._deleted += len(labels)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Labels and similarity scores (higher is closer) of the k nearest live vectors."""
        k = min(k, self.count)
        if k <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        self._index.set_ef(max(self.ef_search, k))
        labels, distances = self._index.knn_query(np.asarray(query, dtype=np.float32).reshape(1, -1), k=k)
        scores = -distances[0] if self.space == "l2" else 1.0 - distances[0]
        return labels[0].astype(np.int64), scores.astype(np.float32)

    def vectors(self, labels: list[int]) -> np.ndarray:
        return np.asarray(self._index.get_items(labels), dtype=np.float32)

    def save(self, path: Path) -> None:
        self._index.save_index(str(path))
