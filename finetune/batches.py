"""Training examples into batches: tokenized file, seeded hold-out split, padding, rank-aware batch order.

Pure apart from reading the file: the order depends only on (seed, epoch), which is what lets a resumed
run replay exactly the batches an uninterrupted one saw, and several processes share one order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from finetune.data import IGNORE_INDEX, pack_raw, read_records, tokenize_record
from models.config import FinetuneConfig

Example = dict[str, list[int]]


def load_examples(path: Path, tokenizer: Any, ft: FinetuneConfig) -> tuple[str, list[Example]]:
    """The file's format and its tokenized examples (raw text packed into finetune.max_seq_len blocks)."""
    fmt, records = read_records(path)
    if fmt == "raw":
        return fmt, pack_raw(records, tokenizer, ft.max_seq_len)
    return fmt, [tokenize_record(r, tokenizer, ft.max_seq_len) for r in records]


def split(examples: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """(train, held out): a seeded shuffle; at least one held out when fraction > 0, one kept for training."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(examples) - 1, max(1, round(len(examples) * fraction))) if fraction > 0 else 0
    return [examples[i] for i in order[n_eval:]], [examples[i] for i in order[:n_eval]]


def collate(batch: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch to its longest example; padding is masked out of attention and loss."""
    width = max(len(e["input_ids"]) for e in batch)

    def pad(key: str, value: int) -> torch.Tensor:
        return torch.tensor([e[key] + [value] * (width - len(e[key])) for e in batch])

    return {
        "input_ids": pad("input_ids", pad_id),
        "labels": pad("labels", IGNORE_INDEX),
        "attention_mask": pad("attention_mask", 0),
    }


def micro_batches(examples: list[Any], batch_size: int, seed: int, rank: int, world: int) -> Iterator[list[Any]]:
    """Endless micro-batches, reshuffled each epoch from (seed, epoch); rank r takes every world-th one."""
    epoch, count = 0, 0
    while True:
        order = list(range(len(examples)))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        for start in range(0, len(order), batch_size):
            if count % world == rank:
                yield [examples[i] for i in order[start : start + batch_size]]
            count += 1
        epoch += 1
