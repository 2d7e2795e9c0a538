"""An index folder on disk: immutable generations published atomically, verified before use.

Layout under $RAGTUNE_HOME/indexes/NAME:
    CURRENT            "gen-000007": the generation readers use (replaced atomically)
    gen-000007/        the vector index backend's own files, chunks.sqlite (chunks and their lexical
                       index), config.yaml and manifest.json (sizes, sha256, counts, the index's backend
                       and build settings, the lexical tokenizer, whether chunks carry their context)
    write.lock         held (flock) by the one writer

A writer builds the next generation in a hidden staging folder and publishes it with two renames,
so a crash at any point leaves the old generation or the new one, never a mix. Readers never lock.
The vector index is whichever rag/index backend `index.backend` names; this module only moves its files.
Where the backend keeps vectors in an engine (milvus), its GenerationStore (rag/generations) drafts each
generation there, beside the one readers use, and publishing switches the engine to it before CURRENT: if
the switch fails nothing is published; a crash between the two leaves the engine one complete generation
ahead of CURRENT, and the next ingest publishes past both. Generations are numbered past the folder's and
past those the engine holds (another node, or a lost RAGTUNE_HOME, wrote them).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from models.config import Config, IndexConfig, to_dict, to_yaml
from models.errors import ConfigError, IndexCorruptError, IndexLockedError, IndexMissingError
from models.storage import (
    atomic_write_json,
    atomic_write_text,
    describe_files,
    file_lock,
    publish_dir,
    read_json,
    staged_dir,
    verify_files,
)
from models.trained_embedders import embedder_identity
from rag.generations import GenerationStore, generation_store
from rag.index import IndexInfo, VectorIndex, index_class, manifest_section
from rag.store import ChunkSource, ChunkStore, lexical_problem, lexical_section

# Format 1 gained the "index" section (backend, its files and build settings) without a bump: the files
# are unchanged, and a manifest without the section is read as the backend that predates it.
FORMAT = 1
STORE_FILE, MANIFEST = "chunks.sqlite", "manifest.json"
_REQUIRED = ("files", "embedder", "dim", "space", "count")
_GENERATION = re.compile(r"gen-\d{6,}")
_REBUILD = "rebuild with `ragtune ingest --rebuild DOCS`"


@dataclass(frozen=True)
class Expectation:
    """What the config says the index must have been built with."""

    embedder: str
    dim: int
    index: IndexConfig  # its space and backend must match; its query-time settings are used as they are


Chunks = TypeVar("Chunks", bound=ChunkSource)


@dataclass
class Snapshot(Generic[Chunks]):
    generation: str
    folder: Path | str  # the generation folder, or where an engine serves it (index.uri and index.name)
    manifest: dict[str, Any]
    index: VectorIndex
    store: Chunks  # chunks.sqlite (a ChunkStore), or the engine's rows for a generation read from it alone

    def close(self) -> None:
        self.store.close()


def current_generation(root: Path) -> str | None:
    """The generation CURRENT names, or None before the first ingest; anything else there is corrupt."""
    path = root / "CURRENT"
    try:
        raw = _read_small_file(path)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a directory, a FIFO, unreadable permissions, ...
        raise IndexCorruptError(f"{path} cannot be read ({exc.strerror}); {_REBUILD}") from None
    name = raw.decode("ascii", errors="replace").strip()
    # Only a generation folder of this index: never a path that leads elsewhere (../, /, links).
    if not _GENERATION.fullmatch(name):
        raise IndexCorruptError(f"{path} should name a generation such as gen-000001, not {name[:40]!r}; {_REBUILD}")
    return name


def _read_small_file(path: Path, limit: int = 256) -> bytes:
    """At most `limit` bytes of a regular file. Opened without blocking and checked before it is read: a FIFO
    put in its place would otherwise hang every reader (a server's health check and each question)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return os.read(fd, limit)
    finally:
        os.close(fd)


def missing_index(root: Path, config: IndexConfig | None = None) -> IndexMissingError:
    """Nothing to answer from: no generation in `root`, nor (given `config`) one its engine serves alone."""
    if config is not None and generation_store(config).keeps_chunks:
        return IndexMissingError(
            f"no documents indexed in {root}, and index.uri={config.uri} serves no index {config.name!r}; "
            "run `ragtune ingest DOCS_FOLDER` first"
        )
    return IndexMissingError(f"no documents indexed in {root}; run `ragtune ingest DOCS_FOLDER` first")


def open_snapshot(root: Path, expect: Expectation) -> Snapshot[ChunkStore]:
    """The current generation, after its manifest and its index backend have vouched for every byte read."""
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
    info = _index_info(manifest, folder / MANIFEST)
    check_compatible(manifest, expect, root)
    verify_files(folder, manifest["files"])
    index = index_class(expect.index.backend).load(folder, info, expect.index)
    store = ChunkStore(folder / STORE_FILE, readonly=True)
    chunks = store.chunk_count()
    if not (index.count == chunks == info.count):
        store.close()
        raise IndexCorruptError(
            f"{folder}: vectors ({index.count}), chunks ({chunks}) and manifest ({info.count}) disagree; "
            "rebuild with `ragtune ingest --rebuild DOCS`"
        )
    # Indexes written before the lexical index have no section; they open for dense retrieval.
    if "lexical" in manifest and (problem := lexical_problem(store, manifest["lexical"], generation, chunks)):
        store.close()
        raise IndexCorruptError(f"{folder}: {problem}; {_REBUILD}")
    return Snapshot(generation, folder, manifest, index, store)


def served_generation(config: IndexConfig) -> str | None:
    """The generation an engine serves under index.name (None for a backend of files, or before an ingest)."""
    return generation_store(config).served()


def open_served(config: IndexConfig, generation: str, expect: Expectation) -> Snapshot[ChunkSource]:
    """A generation read from the engine alone: its vectors, chunks and facts, with no folder on this node."""
    index, chunks, facts = generation_store(config).open_served(generation)
    manifest = {**facts, "generation": generation, "index": {"backend": config.backend}}
    where = f"{config.uri} (index.name={config.name})"
    check_compatible(manifest, expect, where)
    # No "lexical" section: the lexical index lives in chunks.sqlite, in the generation folder.
    return Snapshot(generation, where, manifest, index, chunks)


def _index_info(manifest: Any, path: Path) -> IndexInfo:
    """What the manifest says its index holds; one lacking a field that the checks read is corrupt."""
    try:
        section = manifest_section(manifest)
        if any(key not in manifest for key in _REQUIRED) or not isinstance(section["backend"], str):
            raise KeyError
        counts = (manifest["dim"], manifest["count"], manifest.get("deleted", 0))
        if not all(type(n) is int and n >= 0 for n in counts) or not isinstance(manifest["space"], str):
            raise TypeError
        if not isinstance(manifest["embedder"], str) or not isinstance(manifest["files"], dict):
            raise TypeError
        return IndexInfo(manifest["space"], manifest["dim"], manifest["count"], manifest.get("deleted", 0), section)
    except (KeyError, TypeError, AttributeError):
        raise IndexCorruptError(f"{path} lacks required fields or holds them with the wrong type; {_REBUILD}") from None


def check_compatible(manifest: dict[str, Any], expect: Expectation, root: Path | str) -> None:
    if manifest.get("format") != FORMAT:
        raise IndexCorruptError(f"{root}: index format {manifest.get('format')!r} is not {FORMAT}; rebuild it")
    built_name, expected_name = manifest["embedder"].split("@")[0], expect.embedder.split("@")[0]
    if built_name == expected_name and manifest["embedder"] != expect.embedder:
        raise ConfigError(
            f"index {root} was built with embedder {built_name!r} before it was trained again; re-embed the "
            "documents with `ragtune ingest --rebuild DOCS` (the index keeps answering until the new one is published)"
        )
    if manifest["embedder"] != expect.embedder or manifest["dim"] != expect.dim:
        raise ConfigError(
            f"index {root} was built with embedder {built_name!r} ({manifest['dim']} dimensions) but "
            f"embedder.model is {expected_name!r} ({expect.dim}); set embedder.model={built_name} "
            "or rebuild with `ragtune ingest --rebuild DOCS`"
        )
    backend = manifest_section(manifest)["backend"]
    if backend != expect.index.backend:
        raise ConfigError(
            f"index {root} was built with index.backend {backend!r} but index.backend is {expect.index.backend!r}; "
            f"set index.backend={backend} or rebuild with `ragtune ingest --rebuild DOCS`"
        )
    if manifest["space"] != expect.index.space:
        raise ConfigError(
            f"index {root} uses space {manifest['space']!r} but index.space is {expect.index.space!r}; "
            f"set index.space={manifest['space']} or rebuild with `ragtune ingest --rebuild DOCS`"
        )


def check_contextual(manifest: dict[str, Any], contextual: bool, root: Path) -> None:
    """Chunks with and without their context must not share an index: their vectors are not comparable."""
    built = manifest.get("contextual", False)  # indexes from before the setting hold plain chunks
    if built != contextual:
        raise ConfigError(
            f"index {root} was built with rag.contextual={str(built).lower()} but rag.contextual is "
            f"{str(contextual).lower()}; set rag.contextual={str(built).lower()} or rebuild with "
            "`ragtune ingest --rebuild DOCS`"
        )


@dataclass
class Draft:
    """The next generation while it is being written."""

    staging: Path
    index: VectorIndex
    store: ChunkStore
    base: str | None  # generation it started from
    extra: dict[str, Any] = field(default_factory=dict)
    upgraded: bool = False  # the base lacked the lexical index, added now: worth publishing on its own


class Writer:
    """`with Writer(root, config, dim) as draft: ...; writer.commit()` builds and publishes one generation."""

    def __init__(self, root: Path, config: Config, dim: int, rebuild: bool = False) -> None:
        self.root, self.config, self.dim, self.rebuild = root, config, dim, rebuild
        self._release = ExitStack()  # the lock and the staging folder, undone in reverse on exit
        self.draft: Draft | None = None
        self.generations: GenerationStore = generation_store(config.index)
        self.generation = ""  # named once the lock is held: a draft in an engine is named after it
        self.published: str | None = None
        # What the generation records as its embedder; a trained one is verified (hashed) to name it, so once.
        self.embedder = embedder_identity(config.embedder.model)

    def __enter__(self) -> Draft:
        self.root.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            try:
                stack.enter_context(file_lock(self.root / "write.lock", wait=False))
            except BlockingIOError:
                raise IndexLockedError(
                    f"{self.root} is being written by another process; wait for it to finish "
                    "(readers keep working meanwhile)"
                ) from None
            # Clears dead writers' staging folders (the lock makes this the only live one) and removes
            # its own if anything below raises.
            # An engine that is unreachable, or serves another dimension under this name, fails before any write.
            self.generations.prepare(self.dim, self.embedder)
            staging = stack.enter_context(staged_dir(self.root, "gen"))
            self.generation = f"gen-{_next_number(self.root, self.generations.numbers()):06d}"
            base = None if self.rebuild else current_generation(self.root)
            loaded: VectorIndex | None = None
            if base is None:
                store = ChunkStore(staging / STORE_FILE)
            else:
                snapshot = open_snapshot(self.root, Expectation(self.embedder, self.dim, self.config.index))
                check_contextual(snapshot.manifest, self.config.rag.contextual, self.root)
                loaded, store = snapshot.index, snapshot.store.copy_to(staging / STORE_FILE)
                snapshot.close()
            # Readers keep the base; an engine copies it server-side, each row with its chunk from `store`.
            index = self.generations.draft(loaded, self.generation, self.dim, store, self._facts())
            # A base written before the lexical index gets it now, from its own chunks (nothing re-embedded).
            upgraded = store.upgrade() and base is not None
            self.draft = Draft(staging, index, store, base, upgraded=upgraded)
            self._release = stack.pop_all()
        return self.draft

    def _facts(self) -> dict[str, Any]:
        """What a reader without the generation folder checks before using the engine's copy."""
        config = self.config
        return {
            "format": FORMAT,
            "embedder": self.embedder,
            "dim": self.dim,
            "space": config.index.space,
            "contextual": config.rag.contextual,
        }

    def commit(self) -> str:
        draft = self.draft
        assert draft is not None, "commit() outside the with-block"
        if draft.index.needs_compaction:
            draft.index = draft.index.compacted(draft.store.live_ids())
        generation = self.generation
        # The store names its generation, so a chunks.sqlite (and its lexical index) moved elsewhere is caught.
        draft.store.set_meta("generation", generation)
        draft.store.commit()
        section = draft.index.save(draft.staging)
        documents = len(draft.store.documents())
        count = draft.store.chunk_count()
        lexical = lexical_section(draft.store)
        draft.store.close()
        atomic_write_text(draft.staging / "config.yaml", to_yaml(self.config))
        atomic_write_json(
            draft.staging / MANIFEST,
            {
                "format": FORMAT,
                "generation": generation,
                "base": draft.base,
                "embedder": self.embedder,
                "dim": self.dim,
                "space": self.config.index.space,
                "count": count,
                "deleted": draft.index.deleted,
                "documents": documents,
                "contextual": self.config.rag.contextual,
                "lexical": lexical,
                "index": {"backend": self.config.index.backend, **section},
                "files": describe_files(draft.staging, [*section["files"], STORE_FILE, "config.yaml"]),
                "config": to_dict(self.config),
                "created_at": time.time(),
                **draft.extra,
            },
        )
        publish_dir(draft.staging, self.root / generation)
        # The engine first: if it cannot switch (a typed error), CURRENT still names the generation it serves
        # and the unpublished folder is pruned by the next commit.
        self.generations.publish(generation, keep={generation, draft.base})
        if (self.root / "CURRENT").is_dir():  # damage that --rebuild repairs: a file must take its place
            shutil.rmtree(self.root / "CURRENT")
        atomic_write_text(self.root / "CURRENT", generation + "\n")
        self.published = generation
        _prune(self.root, keep={generation, draft.base})
        return generation

    def __exit__(self, *exc: Any) -> None:
        if self.draft is not None and self.published is None:
            self.draft.store.close()
            self.generations.discard(self.draft.index)
            shutil.rmtree(self.draft.staging, ignore_errors=True)  # a block that commits nothing leaves nothing
        self._release.__exit__(*exc)


def expectation(config: Config, dim: int) -> Expectation:
    return Expectation(embedder_identity(config.embedder.model), dim, config.index)


def _next_number(root: Path, engine: list[int]) -> int:
    """Past the folder's generations and the engine's: an engine's generation is never written over."""
    numbers = [int(p.name[4:]) for p in root.glob("gen-*") if p.name[4:].isdigit()]
    return max([*numbers, *engine], default=0) + 1


def _prune(root: Path, keep: set[str | None]) -> None:
    # The previous generation stays one round, so a reader that opened it just now can finish.
    for folder in root.glob("gen-*"):
        if folder.name not in keep:
            shutil.rmtree(folder, ignore_errors=True)
