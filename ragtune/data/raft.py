"""RAFT-style training data for hybrid mode: each QA pair's prompt is the real RAG prompt, holding the
chunk the answer came from (the oracle) in a share of examples, plus distractor chunks, so the adapter
learns to read retrieved context and to ignore what does not answer the question.

A pair names its oracle either as `chunk` (an id "PATH#ORDINAL", as `ragtune data synth` writes) or as
`doc` (a document path relative to the first docs folder, as the dataset importers write): then the
oracle is that document's chunk closest to the question, the one retrieval would most likely return.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finetune.data import DataError, read_items
from finetune.synth import SourceChunk
from models.config import FinetuneConfig
from models.storage import atomic_write_text
from rag.prompt import Passage, build_messages


@dataclass(frozen=True)
class RaftSummary:
    examples: int
    with_oracle: int
    distractors: int


def read_pairs(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line, record) of prompt/completion records that name their source: a `chunk` id or a `doc` path."""
    pairs = []
    for number, record in read_items(path):
        fields_ok = isinstance(record, dict) and all(isinstance(record.get(k), str) for k in ("prompt", "completion"))
        if not fields_ok or not any(isinstance(record.get(k), str) for k in ("chunk", "doc")):
            raise DataError(
                f"{path}:{number}: needs string fields prompt, completion and chunk (the output of "
                "`ragtune data synth`) or doc (a document path relative to the docs folder)"
            )
        pairs.append((number, record))
    if not pairs:
        raise DataError(f"{path}: holds no pairs")
    return pairs


class _DocOracles:
    """For `doc` pairs: the named document's chunk most similar to the question."""

    def __init__(self, chunks: list[SourceChunk], docs_root: Path | None, embedder: Any) -> None:
        self.by_source: dict[str, list[SourceChunk]] = {}
        for c in chunks:
            self.by_source.setdefault(str(Path(c.source).resolve()), []).append(c)
        self.docs_root, self.embedder = docs_root, embedder

    def find(self, pair: dict[str, str], where: str) -> SourceChunk:
        if self.docs_root is None or self.embedder is None:
            raise DataError(f"{where}: names a doc, which needs the docs folder and an embedder to pick its chunk")
        candidates = self.by_source.get(str((self.docs_root / pair["doc"]).resolve()))
        if not candidates:
            raise DataError(
                f"{where}: doc {pair['doc']!r} is not a readable document under {self.docs_root}; "
                "pass the docs folder the pairs refer to"
            )
        if len(candidates) == 1:
            return candidates[0]
        vectors = self.embedder.encode([pair["prompt"]] + [c.text for c in candidates])
        return candidates[int(np.argmax(vectors[1:] @ vectors[0]))]


def build_raft(
    pairs_path: Path,
    chunks: list[SourceChunk],
    out: Path,
    ft: FinetuneConfig,
    *,
    docs_root: Path | None = None,
    embedder: Any = None,
) -> RaftSummary:
    """Write chat JSONL: [system, user (fenced passages + question), assistant (answer)] per pair."""
    by_id = {c.id: c for c in chunks}
    doc_oracles = _DocOracles(chunks, docs_root, embedder)
    rng = random.Random(ft.seed)
    lines, with_oracle = [], 0
    for number, pair in read_pairs(pairs_path):
        where = f"{pairs_path}:{number}"
        if "chunk" in pair:
            oracle = by_id.get(pair["chunk"])
            if oracle is None:
                raise DataError(
                    f"{where}: chunk {pair['chunk']!r} is not among the documents given; "
                    "pass the same documents and chunking settings that `data synth` used"
                )
        else:
            oracle = doc_oracles.find(pair, where)
        others = [c for c in chunks if c.source != oracle.source] or [c for c in chunks if c.id != oracle.id]
        picked = rng.sample(others, min(ft.raft_distractors, len(others)))
        if rng.random() < ft.raft_oracle_fraction:
            picked.append(oracle)
            with_oracle += 1
        rng.shuffle(picked)
        passages = [Passage(i, Path(c.source).name, c.text) for i, c in enumerate(picked, 1)]
        messages = build_messages(pair["prompt"], passages)
        messages.append({"role": "assistant", "content": pair["completion"]})
        lines.append(json.dumps({"messages": messages, "chunk": oracle.id, "oracle": oracle in picked}))
    atomic_write_text(out, "\n".join(lines) + "\n")
    return RaftSummary(examples=len(lines), with_oracle=with_oracle, distractors=ft.raft_distractors)
