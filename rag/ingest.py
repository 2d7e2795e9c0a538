"""Ingest: walk -> read -> chunk -> embed -> commit one new index generation (rag/collection.py).

Documents are keyed by resolved path and identified by content sha256: unchanged files are skipped,
changed ones re-chunked and re-embedded, files gone from a walked root removed. The lexical index lives
in the chunk store and follows every add and remove in the same generation.

With rag.contextual, each chunk is embedded and indexed as "title > heading path", a blank line, then
its text; the store keeps the two apart, and a source shows the text alone.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from models.config import Config
from models.embedding import Embedder
from models.errors import ConfigError
from models.paths import index_dir
from models.storage import sha256_file
from rag.chunk import chunk_long_text, context_line, document_title, fit_context, with_context
from rag.collection import Draft, Writer
from rag.loaders import Section, UnreadableFileError, check_file_size, read_sections
from rag.walk import inside, resolve_roots, walk_documents

_EMBED_GROUP = 512  # chunks handed to the embedder at once: large enough to batch well, small for progress

# Called as a document's chunks are embedded: (its path, its chunks embedded so far, all its chunks).
OnProgress = Callable[[str, int, int], None]


@dataclass
class IngestSummary:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    chunks: int = 0  # chunks embedded in this run
    total_chunks: int = 0
    seconds: float = 0.0
    generation: str | None = None

    def line(self) -> str:
        return (
            f"added {len(self.added)}, updated {len(self.updated)}, removed {len(self.removed)}, "
            f"unchanged {self.unchanged}, skipped {len(self.skipped)}; embedded {self.chunks} chunks "
            f"({self.total_chunks} in index) in {self.seconds:.1f}s"
        )


@dataclass
class _Pending:
    path: str
    root: str
    sha256: str
    size: int
    chunks: list[tuple[str, str, str]]  # (locator, text, context)


def ingest(
    roots: list[str | Path],
    config: Config,
    embedder: Embedder,
    *,
    rebuild: bool = False,
    progress: bool | None = None,
    on_progress: OnProgress | None = None,
) -> IngestSummary:
    """Bring the configured index in line with the documents under `roots`; `on_progress` follows each document."""
    limit = embedder.max_tokens - 2  # the embedder adds its own start and end tokens
    if config.rag.chunk_tokens > limit:
        raise ConfigError(
            f"rag.chunk_tokens={config.rag.chunk_tokens} exceeds the embedder's limit of {limit} text tokens; "
            "lower rag.chunk_tokens"
        )
    started = time.perf_counter()
    summary = IngestSummary()
    resolved = resolve_roots(roots)
    with (writer := Writer(index_dir(config), config, embedder.dim, rebuild=rebuild)) as draft:
        known = {doc.path: doc for doc in draft.store.documents()}
        pending, seen = [], set()
        files = list(walk_documents(resolved))
        for found in tqdm(files, desc="reading", unit="file", disable=_quiet(progress)):
            key = str(found.path)
            if found.skip_reason:
                summary.skipped.append((key, found.skip_reason))
                continue
            if key in seen:
                continue
            seen.add(key)
            item = _prepare(found.path, found.root, known.get(key), config, embedder, summary)
            if item is not None:
                pending.append(item)
        for path in known:
            gone = path not in seen and not Path(path).exists()
            if gone and any(inside(Path(path), root) for root in resolved):
                draft.index.delete(draft.store.remove_document(path))
                summary.removed.append(path)
        _embed_and_store(pending, draft, embedder, summary, progress, on_progress)
        summary.total_chunks = draft.store.chunk_count()
        if summary.added or summary.updated or summary.removed or draft.base is None or draft.upgraded:
            summary.generation = writer.commit()
    summary.seconds = time.perf_counter() - started
    return summary


def _prepare(
    path: Path, root: Path, known, config: Config, embedder: Embedder, summary: IngestSummary
) -> _Pending | None:
    key = str(path)
    if not _utf8(key):
        summary.skipped.append((key, "its name is not valid UTF-8, which the index cannot store; rename it"))
        return None
    try:
        size = check_file_size(path, config.rag)  # before hashing: an oversized file is skipped unread
        digest = sha256_file(path)
        if known is not None and known.sha256 == digest:
            summary.unchanged += 1
            return None
        sections = read_sections(path, config.rag)
    except UnreadableFileError as exc:
        summary.skipped.append((key, str(exc).removeprefix(f"{path}").lstrip(": ")))
        return None
    except OSError as exc:
        summary.skipped.append((key, f"cannot be read ({exc.strerror})"))
        return None
    chunks = chunk_document(sections, document_title(key), config, embedder)
    (summary.updated if known is not None else summary.added).append(key)
    return _Pending(key, str(root), digest, size, chunks)


def _utf8(name: str) -> bool:
    # A name that is not UTF-8 (bytes such as Latin-1's é) reaches Python as lone surrogates.
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def chunk_sections(sections: list[Section], config: Config, embedder: Embedder) -> list[tuple[str, str]]:
    """(locator, text) chunks of a document, cut on the embedder's own tokens."""
    return [(locator, text) for locator, text, _ in chunk_document(sections, "", config, embedder)]


def chunk_document(
    sections: list[Section], title: str, config: Config, embedder: Embedder
) -> list[tuple[str, str, str]]:
    """(locator, text, context) chunks of a document; context is "" unless rag.contextual."""
    rag = config.rag
    # The context shares the embedder's window with a chunk of up to rag.chunk_tokens, and is kept to at
    # most half a chunk so that it names where the chunk stands without outweighing what it says.
    budget = min(embedder.max_tokens - 2 - rag.chunk_tokens, rag.chunk_tokens // 2)
    chunks = []
    for section in sections:
        context = context_line(title, section.heading) if rag.contextual else ""
        if context:
            context = fit_context(context, embedder.token_offsets(context), budget)
        pieces = chunk_long_text(section.text, embedder.token_offsets, rag.chunk_tokens, rag.chunk_overlap)
        chunks.extend((section.locator, chunk.text, context) for chunk in pieces)
    return chunks


def _embed_and_store(
    pending: list[_Pending],
    draft: Draft,
    embedder: Embedder,
    summary: IngestSummary,
    progress: bool | None,
    on_progress: OnProgress | None,
) -> None:
    total = sum(len(p.chunks) for p in pending)
    tally = _Tally({p.path: len(p.chunks) for p in pending}, on_progress)
    with tqdm(total=total, desc="embedding", unit="chunk", disable=_quiet(progress)) as bar:
        group: list[tuple[int, str, str]] = []  # (chunk id, indexed text, document path)
        for item in pending:
            draft.index.delete(draft.store.remove_document(item.path))
            ids = draft.store.add_document(item.path, item.root, item.sha256, item.size, item.chunks)
            group.extend((i, with_context(context, text), item.path) for i, (_, text, context) in zip(ids, item.chunks))
            while len(group) >= _EMBED_GROUP:
                _flush(group[:_EMBED_GROUP], draft, embedder, bar, tally)
                group = group[_EMBED_GROUP:]
        _flush(group, draft, embedder, bar, tally)
    summary.chunks = total


class _Tally:
    """Chunks embedded per document, reported to `on_progress` after each group."""

    def __init__(self, totals: dict[str, int], on_progress: OnProgress | None) -> None:
        self.totals, self.on_progress, self.done = totals, on_progress, Counter[str]()

    def add(self, paths: list[str]) -> None:
        if self.on_progress is not None:
            self.done.update(paths)
            for path in dict.fromkeys(paths):
                self.on_progress(path, self.done[path], self.totals[path])


def _flush(group: list[tuple[int, str, str]], draft: Draft, embedder: Embedder, bar: tqdm, tally: _Tally) -> None:
    if group:
        ids, texts, paths = zip(*group)
        draft.index.add(embedder.encode(list(texts)), list(ids))
        bar.update(len(group))
        tally.add(list(paths))


def remove_documents(paths: list[str], config: Config, dim: int) -> list[str]:
    """Drop documents (as listed by `docs list`) from the index; unknown paths are an error."""
    from models.errors import InputError

    with (writer := Writer(index_dir(config), config, dim)) as draft:
        known = {doc.path for doc in draft.store.documents()}
        targets = [_match(p, known) for p in paths]
        missing = [p for p, t in zip(paths, targets) if t is None]
        if missing:
            raise InputError(f"not in the index: {', '.join(missing)}; see `ragtune docs list`")
        for target in targets:
            draft.index.delete(draft.store.remove_document(target))
        writer.commit()
    return [t for t in targets if t]


def _match(given: str, known: set[str]) -> str | None:
    if given in known:
        return given
    resolved = str(Path(given).expanduser().resolve())
    return resolved if resolved in known else None


def _quiet(progress: bool | None) -> bool | None:
    # tqdm: None hides the bar when stderr is not a terminal (logs, CI), False always shows it.
    return None if progress is None else not progress
