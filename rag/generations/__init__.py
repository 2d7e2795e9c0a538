"""The GenerationStore interface and the factory that picks it by `index.backend`: where generations live.

A generation is one immutable version of an index; rag/collection.py writes its folder and names it in CURRENT.
A backend of files (hnswlib) keeps the whole generation in that folder, so its store has almost nothing to do.
A backend that keeps its vectors in an engine (milvus) gives each generation its own copy there and a name the
engine serves: its store checks that the engine can be reached, numbers generations past those it holds, drafts
the next one beside the served one, switches the served name when it is published, drops a draft that failed,
and reads a served generation (vectors, chunks and facts) without a folder. Stores are registered like the
vector indexes (rag/index): one module each, imported only when chosen.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Any

from models.config import IndexConfig
from models.errors import ConfigError
from rag.index import VectorIndex
from rag.store import ChunkSource

# index.backend -> "module:Class"; rag/index INDEX_BACKENDS lists the same names (a unit test keeps them in step).
GENERATION_STORES = {
    "hnswlib": "rag.generations.files:FolderGenerations",
    "milvus": "rag.generations.milvus:MilvusGenerations",
}


class GenerationStore(ABC):
    """The generations of the index `config` names, as the engine behind index.backend keeps them.

    Only the one writer (holding the index folder's lock) calls prepare, draft, publish and discard; readers
    call served and open_served from any thread.
    """

    # Whether a node with no generation folder can answer from this store alone (each chunk kept with its vector).
    keeps_chunks = False

    def __init__(self, config: IndexConfig) -> None:
        self.config = config

    @abstractmethod
    def reach(self) -> None:
        """Raise ConfigError naming index.uri if the engine cannot be reached now, and hold no connection after:
        a command checks this before it writes anything (`compare`, `doctor`)."""

    @abstractmethod
    def release(self) -> None:
        """Close this process's connection, so that another process may open the engine (a Milvus Lite file)."""

    @abstractmethod
    def prepare(self, dim: int, embedder: str) -> None:
        """Before a writer writes anything: raise ConfigError if the engine cannot take an index of `dim`
        dimensions from `embedder` (unreachable, or serving another dimension under the same name)."""

    @abstractmethod
    def numbers(self) -> list[int]:
        """The generation numbers the engine holds for index.name, whoever wrote them: a writer numbers its
        generation past them as well as past its own folder's."""

    @abstractmethod
    def draft(
        self, base: VectorIndex | None, generation: str, dim: int, chunks: ChunkSource, facts: dict[str, Any]
    ) -> VectorIndex:
        """The index a writer changes to build `generation` from `base` (None: from nothing), which readers may
        still be using; `chunks` are the writer's and `facts` what a reader checks (embedder, dim, space, ...)."""

    @abstractmethod
    def publish(self, generation: str, keep: set[str | None]) -> None:
        """Serve `generation` (before CURRENT names it) and drop generations older than the `keep` ones; raise
        IndexStateError if the engine was not switched, so that the writer publishes nothing."""

    @abstractmethod
    def discard(self, draft: VectorIndex) -> None:
        """Drop a draft that will never be published (the writer failed); it is never served."""

    @abstractmethod
    def served(self) -> str | None:
        """The generation the engine serves under index.name, read from the engine alone; None where it serves
        nothing without its generation folder, or has no such index yet."""

    @abstractmethod
    def open_served(self, generation: str) -> tuple[VectorIndex, ChunkSource, dict[str, Any]]:
        """The served `generation`'s index, its chunks and its facts, read without a generation folder."""


def generation_store(config: IndexConfig) -> GenerationStore:
    """The GenerationStore registered for `index.backend`, its module imported now."""
    try:
        target = GENERATION_STORES[config.backend]
    except KeyError:
        raise ConfigError(
            f"index.backend: unknown backend {config.backend!r}; choose one of {', '.join(GENERATION_STORES)}"
        ) from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(config)
