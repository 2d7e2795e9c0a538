"""An index folder on disk: immutable generations published atomically, verified before use.

Layout under $RAGTUNE_HOME/indexes/NAME:
    CURRENT            "gen-000007": the generation readers use (replaced atomically)
    gen-000007/        vectors.hnsw, chunks.sqlite, manifest.json (sizes, sha256, counts), config.yaml
    write.lock         held (flock) by the one writer

A writer builds the next generation in a hidden staging folder and publishes it with two renames,
so a crash at any point leaves the old generation or the new one, never a mix. Readers never lock.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.config import Config, to_dict, to_yaml
from models.errors import ConfigError, IndexCorruptError, IndexLockedError, IndexMissingError
from models.storage import (
    atomic_write_json,
    atomic_write_text,
    describe_files,
    make_staging_dir,
    publish_dir,
    read_json,
    remove_stale_staging,
    verify_files,
)
from rag.index import VectorIndex, read_header
from rag.store import ChunkStore

FORMAT = 1
INDEX_FILE, STORE_FILE, MANIFEST = "vectors.hnsw", "chunks.sqlite", "manifest.json"


@dataclass(frozen=True)
class Expectation:
    """What the config says the index must have been built with."""

    embedder: str
    dim: int
    space: str
    ef_search: int


@dataclass
class Snapshot:
    generation: str
    folder: Path
    manifest: dict[str, Any]
    index: VectorIndex
    store: ChunkStore

    def close(self) -> None:
        self.store.close()


def current_generation(root: Path) -> str | None:
    try:
        return (root / "CURRENT").read_text(encoding="ascii").strip() or None
    except FileNotFoundError:
        return None


def missing_index(root: Path) -> IndexMissingError:
    return IndexMissingError(f"no documents indexed in {root}; run `ragtune ingest DOCS_FOLDER` first")


def open_snapshot(root: Path, expect: Expectation) -> Snapshot:
    """The current generation, after its manifest has vouched for every byte hnswlib will read."""
    generation = current_generation(root)
    if generation is None:
        raise missing_index(root)
    folder = root / generation
    try:
        manifest = read_json(folder / MANIFEST, "index manifest")
    except FileNotFoundError:
        raise IndexCorruptError(
            f"{folder / MANIFEST} is missing; rebuild with `ragtune ingest --rebuild DOCS`"
        ) from None
    try:
        files, dim, space, count = manifest["files"], manifest["dim"], manifest["space"], manifest["count"]
    except (KeyError, TypeError):
        raise IndexCorruptError(
            f"{folder / MANIFEST} lacks required fields; rebuild with `ragtune ingest --rebuild`"
        ) from None
    check_compatible(manifest, expect, root)
    verify_files(folder, files)
    _check_header(folder / INDEX_FILE, dim, count + manifest.get("deleted", 0))
    index = VectorIndex.load(folder / INDEX_FILE, space, dim, expect.ef_search, manifest.get("deleted", 0))
    store = ChunkStore(folder / STORE_FILE, readonly=True)
    if not (index.count == store.chunk_count() == count):
        store.close()
        raise IndexCorruptError(
            f"{folder}: vectors ({index.count}), chunks ({store.chunk_count()}) and manifest ({count}) disagree; "
            "rebuild with `ragtune ingest --rebuild DOCS`"
        )
    return Snapshot(generation, folder, manifest, index, store)


def _check_header(path: Path, dim: int, stored: int) -> None:
    """The file itself must agree with the manifest, even if someone edited the manifest by hand."""
    try:
        file_dim, file_count = read_header(path)
    except (OSError, ValueError) as exc:
        raise IndexCorruptError(
            f"{path}: unreadable index header ({exc}); rebuild with `ragtune ingest --rebuild`"
        ) from None
    if (file_dim, file_count) != (dim, stored):
        raise IndexCorruptError(
            f"{path} holds {file_count} vectors of {file_dim} dimensions but its manifest says {stored} of {dim}; "
            "rebuild with `ragtune ingest --rebuild DOCS`"
        )


def check_compatible(manifest: dict[str, Any], expect: Expectation, root: Path) -> None:
    if manifest.get("format") != FORMAT:
        raise IndexCorruptError(f"{root}: index format {manifest.get('format')!r} is not {FORMAT}; rebuild it")
    if manifest["embedder"] != expect.embedder or manifest["dim"] != expect.dim:
        raise ConfigError(
            f"index {root} was built with embedder {manifest['embedder']!r} ({manifest['dim']} dimensions) but "
            f"embedder.model is {expect.embedder!r} ({expect.dim}); set embedder.model={manifest['embedder']} "
            "or rebuild with `ragtune ingest --rebuild DOCS`"
        )
    if manifest["space"] != expect.space:
        raise ConfigError(
            f"index {root} uses space {manifest['space']!r} but index.space is {expect.space!r}; "
            f"set index.space={manifest['space']} or rebuild with `ragtune ingest --rebuild DOCS`"
        )


@dataclass
class Draft:
    """The next generation while it is being written."""

    staging: Path
    index: VectorIndex
    store: ChunkStore
    base: str | None  # generation it started from
    extra: dict[str, Any] = field(default_factory=dict)


class Writer:
    """`with Writer(root, config, dim) as draft: ...; writer.commit()` builds and publishes one generation."""

    def __init__(self, root: Path, config: Config, dim: int, rebuild: bool = False) -> None:
        self.root, self.config, self.dim, self.rebuild = root, config, dim, rebuild
        self._lock_fd: int | None = None
        self.draft: Draft | None = None
        self.published: str | None = None

    def __enter__(self) -> Draft:
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            remove_stale_staging(self.root)
            staging = make_staging_dir(self.root, "gen")
            base = None if self.rebuild else current_generation(self.root)
            cfg = self.config
            if base is None:
                index = VectorIndex.create(
                    cfg.index.space, self.dim, cfg.index.m, cfg.index.ef_construction, cfg.index.ef_search
                )
                store = ChunkStore(staging / STORE_FILE)
            else:
                snapshot = open_snapshot(self.root, expectation(cfg, self.dim))
                index = snapshot.index
                store = snapshot.store.copy_to(staging / STORE_FILE)
                snapshot.close()
            self.draft = Draft(staging, index, store, base)
            return self.draft
        except BaseException:
            self._unlock()
            raise

    def commit(self) -> str:
        draft = self.draft
        assert draft is not None, "commit() outside the with-block"
        if draft.index.deleted > max(draft.index.count, 256):
            draft.index = _compacted(draft.index, draft.store, self.config)
        draft.store.commit()
        draft.index.save(draft.staging / INDEX_FILE)
        documents = len(draft.store.documents())
        count = draft.store.chunk_count()
        draft.store.close()
        generation = f"gen-{_next_number(self.root):06d}"
        atomic_write_text(draft.staging / "config.yaml", to_yaml(self.config))
        atomic_write_json(
            draft.staging / MANIFEST,
            {
                "format": FORMAT,
                "generation": generation,
                "base": draft.base,
                "embedder": self.config.embedder.model,
                "dim": self.dim,
                "space": self.config.index.space,
                "m": self.config.index.m,
                "ef_construction": self.config.index.ef_construction,
                "count": count,
                "deleted": draft.index.deleted,
                "documents": documents,
                "files": describe_files(draft.staging, [INDEX_FILE, STORE_FILE, "config.yaml"]),
                "config": to_dict(self.config),
                "created_at": time.time(),
                **draft.extra,
            },
        )
        publish_dir(draft.staging, self.root / generation)
        atomic_write_text(self.root / "CURRENT", generation + "\n")
        self.published = generation
        _prune(self.root, keep={generation, draft.base})
        return generation

    def __exit__(self, *exc: object) -> None:
        if self.draft is not None and self.published is None:
            self.draft.store.close()
            shutil.rmtree(self.draft.staging, ignore_errors=True)
        self._unlock()

    def _lock(self) -> None:
        fd = os.open(self.root / "write.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise IndexLockedError(
                f"{self.root} is being written by another process; wait for it to finish "
                "(readers keep working meanwhile)"
            ) from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock; so does dying
            self._lock_fd = None


def expectation(config: Config, dim: int) -> Expectation:
    return Expectation(config.embedder.model, dim, config.index.space, config.index.ef_search)


def _next_number(root: Path) -> int:
    numbers = [int(p.name[4:]) for p in root.glob("gen-*") if p.name[4:].isdigit()]
    return max(numbers, default=0) + 1


def _prune(root: Path, keep: set[str | None]) -> None:
    # The previous generation stays one round, so a reader that opened it just now can finish.
    for folder in root.glob("gen-*"):
        if folder.name not in keep:
            shutil.rmtree(folder, ignore_errors=True)


def _compacted(index: VectorIndex, store: ChunkStore, config: Config) -> VectorIndex:
    """A fresh graph holding only live vectors: marked-deleted ones still cost memory and search time."""
    live = store.live_ids()
    fresh = VectorIndex.create(
        index.space,
        index.dim,
        config.index.m,
        config.index.ef_construction,
        config.index.ef_search,
        capacity=max(len(live), 1),
    )
    for start in range(0, len(live), 4096):
        batch = live[start : start + 4096]
        fresh.add(index.vectors(batch), batch)
    return fresh
