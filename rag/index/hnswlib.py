"""hnswlib behind VectorIndex: one graph file per generation, its header checked before hnswlib reads it.

hnswlib trusts its file: a truncated one, a damaged header field or another dimension can crash the
process or be mis-read silently. `verify` parses the header and walks the per-element link sizes in
Python, so the file reaches hnswlib only once its layout agrees with itself and with the manifest.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import numpy as np

from models.config import IndexConfig
from models.errors import IndexCorruptError
from rag.index import IndexInfo, VectorIndex, missing_library

try:
    import hnswlib
except ImportError as exc:  # only a config that chooses index.backend=hnswlib gets here
    raise missing_library("hnswlib", "hnswlib==0.8.0") from exc

FILE = "vectors.hnsw"
_GROWTH = 1.5
_COMPACT_AFTER = 256  # deleted vectors always tolerated: compacting a small index gains nothing
# hnswlib's saveIndex header: offsetLevel0, max_elements, cur_element_count, size_data_per_element,
# label_offset, offsetData, maxlevel, enterpoint_node, maxM, maxM0, M, mult, ef_construction.
_HEADER = struct.Struct("<6QiI3QdQ")
_LINKS = struct.Struct("<I")
_NO_ENTRY = 0xFFFFFFFF


def check_file(path: Path, info: IndexInfo) -> None:
    """Raise ValueError unless `path` is an hnswlib graph holding what `info` says, read without hnswlib."""
    with open(path, "rb") as handle:
        raw = handle.read(_HEADER.size)
        if len(raw) < _HEADER.size:
            raise ValueError(f"{len(raw)} bytes is shorter than an hnswlib header")
        fields = _HEADER.unpack(raw)
        level0, capacity, count, per_element, label_at, data_at, top, entry, max_m, max_m0, m, mult, ef_c = fields
        # The vector is float32 between offsetData and label_offset: its width is the dimension.
        stored = info.count + info.deleted
        if (label_at - data_at, count) != (4 * info.dim, stored):
            dim = (label_at - data_at) / 4
            raise ValueError(
                f"holds {count} vectors of {dim:g} dimensions but its manifest says {stored} of {info.dim}"
            )
        # hnswlib derives these from M and the dimension; any other value is damage, not a setting.
        if (level0, max_m, max_m0, data_at, per_element) != (0, m, 2 * m, 8 * m + 4, label_at + 8):
            raise ValueError("its header's layout fields disagree with each other")
        if not math.isclose(mult, 1 / math.log(m) if m > 1 else math.inf):
            raise ValueError("its header's level multiplier disagrees with its M")
        if any(info.params.get(key, value) != value for key, value in (("m", m), ("ef_construction", ef_c))):
            raise ValueError(f"its header says M={m}, ef_construction={ef_c}, unlike its manifest")
        # hnswlib allocates max_elements on load: it must be what the manifest recorded or, in a manifest
        # older than that record, no more than a Writer ever left (1024 to start, then 1.5x growth).
        room = info.params.get("capacity") or max(1024, int(stored * _GROWTH) + 1)
        if not count <= capacity <= room or ("capacity" in info.params and capacity != room):
            raise ValueError(f"its header claims room for {capacity} vectors, not {room}")
        handle.seek(_HEADER.size + count * per_element)
        tail = handle.read()
    levels = _levels(tail, count, 4 * max_m + 4)
    # Searches start at the entry point, on the top level: both must be the graph's own.
    sound = entry < count and levels[entry] == top == max(levels) if count else (entry, top) == (_NO_ENTRY, -1)
    if not sound:
        raise ValueError("its header's entry point disagrees with its graph")


def _levels(tail: bytes, count: int, link_size: int) -> list[int]:
    """Each element's top level, from the link-list sizes that follow the vectors; the file must end there."""
    levels, at = [], 0
    for _ in range(count):
        if at + _LINKS.size > len(tail):
            raise ValueError("is truncated")
        (size,) = _LINKS.unpack_from(tail, at)
        if size % link_size:
            raise ValueError(f"holds a link list of {size} bytes, not a multiple of {link_size}")
        levels.append(size // link_size)
        at += _LINKS.size + size
    if at != len(tail):
        raise ValueError("is truncated" if at > len(tail) else f"has {len(tail) - at} bytes past its graph")
    return levels


def _path(folder: Path, info: IndexInfo) -> Path:
    return folder / info.params.get("files", [FILE])[0]  # format-1 manifests name no files: theirs is FILE


class HnswIndex(VectorIndex):
    def __init__(self, index: hnswlib.Index, space: str, dim: int, ef_search: int, deleted: int = 0) -> None:
        self._index, self.space, self.dim = index, space, dim
        self.ef_search = ef_search  # query-time: comes from the config, never from the file
        self._deleted = deleted

    @classmethod
    def create(cls, config: IndexConfig, dim: int, capacity: int = 1024) -> HnswIndex:
        index = hnswlib.Index(space=config.space, dim=dim)
        index.init_index(max_elements=capacity, M=config.m, ef_construction=config.ef_construction)
        return cls(index, config.space, dim, config.ef_search)

    @classmethod
    def verify(cls, folder: Path, info: IndexInfo) -> None:
        path = _path(folder, info)
        try:
            check_file(path, info)
        except (OSError, ValueError) as exc:
            raise IndexCorruptError(f"{path}: {exc}; rebuild with `ragtune ingest --rebuild DOCS`") from None

    @classmethod
    def _read(cls, folder: Path, info: IndexInfo, config: IndexConfig) -> HnswIndex:
        index = hnswlib.Index(space=info.space, dim=info.dim)
        index.load_index(str(_path(folder, info)))
        return cls(index, info.space, info.dim, config.ef_search, info.deleted)

    def save(self, folder: Path) -> dict[str, Any]:
        self._index.save_index(str(folder / FILE))
        # M and ef_construction as the graph was built (a loaded graph keeps its own, whatever the config says now).
        return {
            "files": [FILE],
            "m": self._index.M,
            "ef_construction": self._index.ef_construction,
            "capacity": self._index.get_max_elements(),
        }

    @property
    def count(self) -> int:
        return self._index.get_current_count() - self._deleted

    @property
    def deleted(self) -> int:
        return self._deleted

    def add(self, vectors: np.ndarray, labels: np.ndarray | list[int]) -> None:
        # Grow geometrically so a long ingest resizes a few times, not once per batch.
        needed = self._index.get_current_count() + len(labels)
        if needed > self._index.get_max_elements():
            self._index.resize_index(max(needed, int(self._index.get_max_elements() * _GROWTH)))
        self._index.add_items(np.asarray(vectors, dtype=np.float32), np.asarray(labels, dtype=np.int64))

    def delete(self, labels: list[int]) -> None:
        # A mark, not a removal: the vector stays in the graph (and the file) until compaction.
        for label in labels:
            self._index.mark_deleted(int(label))
        self._deleted += len(labels)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.count)
        if k <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        self._index.set_ef(max(self.ef_search, k))
        labels, distances = self._index.knn_query(np.asarray(query, dtype=np.float32).reshape(1, -1), k=k)
        # hnswlib returns distances: squared L2, or 1 - inner product for ip and cosine.
        scores = -distances[0] if self.space == "l2" else 1.0 - distances[0]
        return labels[0].astype(np.int64), scores.astype(np.float32)

    def vectors(self, labels: list[int]) -> np.ndarray:
        return np.asarray(self._index.get_items(labels), dtype=np.float32).reshape(len(labels), self.dim)

    @property
    def needs_compaction(self) -> bool:
        return self._deleted > max(self.count, _COMPACT_AFTER)

    def compacted(self, live: list[int]) -> HnswIndex:
        # A fresh graph with this one's build settings, holding the live vectors only.
        index = hnswlib.Index(space=self.space, dim=self.dim)
        index.init_index(max_elements=max(len(live), 1), M=self._index.M, ef_construction=self._index.ef_construction)
        fresh = HnswIndex(index, self.space, self.dim, self.ef_search)
        for start in range(0, len(live), 4096):
            batch = live[start : start + 4096]
            fresh.add(self.vectors(batch), batch)
        return fresh
