"""RAFT-style training data for hybrid mode: each QA pair's prompt is the real RAG prompt, holding the
chunk the answer came from (the oracle) in a share of examples, plus distractor chunks, so the adapter
learns to read retrieved context and to ignore what does not answer the question.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from finetune.data import DataError
from finetune.synth import SourceChunk
from models.config import FinetuneConfig
from models.storage import atomic_write_text
from rag.prompt import Passage, build_messages


@dataclass(frozen=True)
class RaftSummary:
    examples: int
    with_oracle: int
    distractors: int


def read_pairs(path: Path) -> list[dict[str, str]]:
    """prompt/completion records that name their chunk (as `ragtune data synth` writes them)."""
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not all(
            isinstance(record.get(k), str) for k in ("prompt", "completion", "chunk")
        ):
            raise DataError(
                f"{path}:{number}: needs string fields prompt, completion and chunk "
                "(the output of `ragtune data synth`)"
            )
        pairs.append(record)
    if not pairs:
        raise DataError(f"{path}: holds no pairs")
    return pairs


def build_raft(pairs_path: Path, chunks: list[SourceChunk], out: Path, ft: FinetuneConfig) -> RaftSummary:
    """Write chat JSONL: [system, user (fenced passages + question), assistant (answer)] per pair."""
    by_id = {c.id: c for c in chunks}
    rng = random.Random(ft.seed)
    lines, with_oracle = [], 0
    for number, pair in enumerate(read_pairs(pairs_path), 1):
        oracle = by_id.get(pair["chunk"])
        if oracle is None:
            raise DataError(
                f"{pairs_path}:{number}: chunk {pair['chunk']!r} is not among the documents given; "
                "pass the same documents and chunking settings that `data synth` used"
            )
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
