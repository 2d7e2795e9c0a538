"""Document chunks for the fine-tuning tools, cut exactly as `ingest` cuts them (same ids everywhere)."""

from __future__ import annotations

import sys
from pathlib import Path

from finetune.synth import SourceChunk
from models.config import Config
from models.embedding import Embedder
from rag.ingest import chunk_sections
from rag.loaders import UnreadableFileError, read_sections
from rag.walk import resolve_roots, walk_documents


def document_chunks(paths: list[str | Path], config: Config, embedder: Embedder) -> list[SourceChunk]:
    """Every chunk under `paths`, id'd "PATH#ORDINAL"; unreadable files are reported on stderr and skipped."""
    chunks = []
    for found in walk_documents(resolve_roots(paths)):
        if found.skip_reason:
            print(f"skipped {found.path}: {found.skip_reason}", file=sys.stderr)
            continue
        try:
            sections = read_sections(found.path, config.rag)
        except UnreadableFileError as exc:
            print(f"skipped {exc}", file=sys.stderr)
            continue
        for ordinal, (_, text) in enumerate(chunk_sections(sections, config, embedder)):
            chunks.append(SourceChunk(f"{found.path}#{ordinal}", str(found.path), text))
    return chunks
