"""The finetune section: the training method, its schedule, RAFT data, the LoRA shape and embedder training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from models.config.choices import check


@dataclass(frozen=True)
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    # Module names to adapt; null picks the attention projections of the model's family.
    target_modules: list[str] | None = None

    def __post_init__(self) -> None:
        check(self.r > 0, "finetune.lora.r", f"should be positive, got {self.r}")
        check(self.alpha > 0, "finetune.lora.alpha", f"should be positive, got {self.alpha}")
        check(0 <= self.dropout < 1, "finetune.lora.dropout", f"should be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class EmbedderTuningConfig:
    """`ragtune train --target embedder`: the retriever's embedder trained on the user's documents alone."""

    # How each chunk gets its training query: sentence (one of its sentences; the chunk without it half the time),
    # keyphrase (its rarest frequent words) or lm (questions the local LM writes: slowest; see docs/fine-tuning.md).
    queries: Literal["sentence", "keyphrase", "lm"] = "sentence"
    # Passes over the training triples, or a fixed number of optimizer steps (max_steps wins when set).
    epochs: float = 1.0
    max_steps: int | None = None
    # Train on at most this many chunks (drawn with finetune.seed) so a large corpus trains in bounded time;
    # null: every chunk.
    max_chunks: int | None = 2000
    # Triples per step: every other positive in the batch is a negative too, so larger batches teach more per step.
    batch_size: int = 32
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    # A BM25-mined passage of another document as an extra negative per query.
    hard_negatives: bool = True
    # Checkpoint every N steps; `--resume` continues from the newest complete one.
    save_every: int = 25

    def __post_init__(self) -> None:
        check(self.epochs > 0, "finetune.embedder.epochs", f"should be positive, got {self.epochs}")
        for key in ("max_steps", "max_chunks"):
            value = getattr(self, key)
            check(value is None or value > 0, f"finetune.embedder.{key}", f"should be positive or null, got {value}")
        for key in ("batch_size", "save_every"):
            value = getattr(self, key)
            check(value > 0, f"finetune.embedder.{key}", f"should be positive, got {value}")
        check(self.batch_size >= 2, "finetune.embedder.batch_size", "should be at least 2 (in-batch negatives)")
        check(self.lr > 0, "finetune.embedder.lr", f"should be positive, got {self.lr}")
        check(
            0 <= self.warmup_ratio < 1,
            "finetune.embedder.warmup_ratio",
            f"should be in [0, 1), got {self.warmup_ratio}",
        )


@dataclass(frozen=True)
class FinetuneConfig:
    method: Literal["lora", "full", "qlora"] = "lora"
    # Adapter name under $RAGTUNE_HOME/adapters used by the finetune and hybrid modes.
    adapter: str | None = None
    # Stop after this many optimizer steps (null: run `epochs` epochs).
    max_steps: int | None = None
    epochs: float = 3.0
    lr: float = 2e-4
    batch_size: int = 4
    grad_accum: int = 1
    # Long enough for a RAG prompt with rag.top_k chunks (RAFT examples), not only short QA pairs.
    max_seq_len: int = 1024
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = 0.05
    # Share of examples held out to report eval loss.
    eval_fraction: float = 0.1
    # Write a checkpoint every N optimizer steps.
    save_every: int = 50
    seed: int = 0
    # RAFT-style data for hybrid: share of examples whose prompt holds the chunk the answer came from,
    # and how many unrelated chunks (distractors) each prompt also holds: with the oracle, rag.top_k in all.
    raft_oracle_fraction: float = 0.8
    raft_distractors: int = 2
    lora: LoraConfig = field(default_factory=LoraConfig)
    embedder: EmbedderTuningConfig = field(default_factory=EmbedderTuningConfig)

    def __post_init__(self) -> None:
        check(
            self.max_steps is None or self.max_steps > 0,
            "finetune.max_steps",
            f"should be positive, got {self.max_steps}",
        )
        check(self.epochs > 0, "finetune.epochs", f"should be positive, got {self.epochs}")
        check(self.lr > 0, "finetune.lr", f"should be positive, got {self.lr}")
        for key in ("batch_size", "grad_accum", "max_seq_len", "save_every"):
            value = getattr(self, key)
            check(value > 0, f"finetune.{key}", f"should be positive, got {value}")
        check(0 <= self.eval_fraction < 1, "finetune.eval_fraction", f"should be in [0, 1), got {self.eval_fraction}")
        check(0 <= self.warmup_ratio < 1, "finetune.warmup_ratio", f"should be in [0, 1), got {self.warmup_ratio}")
        check(
            0 <= self.raft_oracle_fraction <= 1,
            "finetune.raft_oracle_fraction",
            f"should be in [0, 1], got {self.raft_oracle_fraction}",
        )
        check(self.raft_distractors >= 0, "finetune.raft_distractors", f"should be >= 0, got {self.raft_distractors}")
