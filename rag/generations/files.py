"""Generations as folders of files (hnswlib): the folder is the whole generation, published with CURRENT.

Nothing lives outside the index folder, so there is no engine to reach, number, switch or clean up, and a node
without the folder has nothing to serve.
"""

from __future__ import annotations

from typing import Any

from models.errors import IndexMissingError
from rag.generations import GenerationStore
from rag.index import VectorIndex, create_index
from rag.store import ChunkSource


class FolderGenerations(GenerationStore):
    def reach(self) -> None:
        return None  # a folder of files is always there

    def release(self) -> None:
        return None

    def prepare(self, dim: int, embedder: str) -> None:
        return None  # a new folder takes any index (rag/collection.py checks a base against the config)

    def numbers(self) -> list[int]:
        return []  # the folder's own generations are all there are

    def draft(
        self, base: VectorIndex | None, generation: str, dim: int, chunks: ChunkSource, facts: dict[str, Any]
    ) -> VectorIndex:
        # The base was loaded for this writer alone: changed in place, its files are saved into the new folder.
        return base if base is not None else create_index(self.config, dim)

    def publish(self, generation: str, keep: set[str | None]) -> None:
        return None  # published with its folder (rag/collection.py)

    def discard(self, draft: VectorIndex) -> None:
        return None  # the staging folder goes, and its files with it

    def served(self) -> str | None:
        return None

    def open_served(self, generation: str) -> tuple[VectorIndex, ChunkSource, dict[str, Any]]:
        raise IndexMissingError(
            f"index.backend={self.config.backend} serves {generation} only from its index folder, which this node "
            "lacks; run `ragtune ingest DOCS_FOLDER` here, or choose an index.backend that serves from index.uri"
        )
