"""Contrastive training of a sentence-transformers embedder on (query, passage, hard negative) triples.

The loss is the multiple-negatives ranking loss: each query must score its own passage above every other
passage and hard negative in the batch. Checkpoints (safetensors, finetune/checkpoint.py) are written every
`save_every` steps under runs/embedder-NAME with the triples themselves, so `--resume` continues on exactly
the same data after a crash and a finished run is published (finetune/embedder_store.py) before they go.
"""

from __future__ import annotations

import json
import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from finetune.checkpoint import latest_checkpoint, read_checkpoint, restore_rng, save_checkpoint
from finetune.embedder_pairs import Triple
from finetune.full_state import gather, restore
from models.config import EmbedderTuningConfig
from models.errors import InputError
from models.paths import data_home
from models.storage import atomic_write_text, read_json, sha256_file
from models.trained_embedders import check_embedder_name

# Cosine similarities are in [-1, 1]; scaled by 20 the softmax over the batch is sharp enough to learn from
# (the value sentence-transformers uses for this loss).
SCALE = 20.0
_TRIPLES = "triples.jsonl"
_RUN = "run.json"


@dataclass(frozen=True)
class EmbedderTraining:
    steps: int
    triples: int
    loss: float  # mean over the last 10% of steps
    seconds: float  # this process only (a resumed run adds to the earlier one's)
    resumed_from: int  # 0 for a fresh run
    peak_rss_mb: float


def embedder_run_dir(name: str) -> Path:
    return data_home() / "runs" / f"embedder-{check_embedder_name(name)}"


def start_run(run: Path, triples: list[Triple], facts: dict[str, Any]) -> None:
    """Write the triples and what they were made from into the run folder (the caller clears an earlier run)."""
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run / _TRIPLES, "".join(json.dumps(t.as_json()) + "\n" for t in triples))
    atomic_write_text(run / _RUN, json.dumps({**facts, "triples_sha256": sha256_file(run / _TRIPLES)}, indent=2))


def resume_run(run: Path, facts: dict[str, Any]) -> list[Triple]:
    """The triples of an interrupted run, after checking it was started from the same documents and settings."""
    if not (run / _RUN).is_file() or not (run / _TRIPLES).is_file():
        raise InputError(f"nothing to resume in {run}: start the training without --resume")
    recorded = read_json(run / _RUN, "embedder training run")
    if recorded.get("triples_sha256") != sha256_file(run / _TRIPLES):
        raise InputError(f"{run / _TRIPLES} changed since the run began: start the training again without --resume")
    changed = sorted(key for key, value in facts.items() if recorded.get(key) != value)
    if changed:
        raise InputError(
            f"the run in {run} was started with other {', '.join(changed)}: run the same command as before, or "
            "start again without --resume"
        )
    lines = (run / _TRIPLES).read_text(encoding="utf-8").splitlines()
    return [Triple(**json.loads(line)) for line in lines]


def train_embedder(
    model: Any, triples: list[Triple], run: Path, settings: EmbedderTuningConfig, seed: int, progress: bool = True
) -> EmbedderTraining:
    """Train `model` (a SentenceTransformer) in place; continues from the newest checkpoint in `run` if any."""
    if len(triples) < 2:
        raise InputError(
            f"only {len(triples)} training queries could be made from the documents: an embedder needs at least "
            "2 (more documents, or finetune.embedder.queries=keyphrase for short ones)"
        )
    batch_size = min(settings.batch_size, len(triples))
    per_epoch = math.ceil(len(triples) / batch_size)
    total = settings.max_steps or max(1, math.ceil(per_epoch * settings.epochs))
    torch.manual_seed(seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _linear_schedule(total, settings.warmup_ratio))
    step, losses = _restore(run, model, optimizer, scheduler)
    started, resumed_from = time.perf_counter(), step
    bar = tqdm(total=total, initial=step, desc="training embedder", unit="step", disable=not progress)
    while step < total:
        batch = [triples[(step * batch_size + k) % len(triples)] for k in range(batch_size)]
        loss = _batch_loss(model, batch, settings.hard_negatives)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        step += 1
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if step % settings.save_every == 0 and step < total:
            save_checkpoint(run, step, gather(model, optimizer), scheduler, {"losses": losses})
    bar.close()
    model.eval()
    tail = losses[-max(1, len(losses) // 10) :]
    return EmbedderTraining(
        steps=step,
        triples=len(triples),
        loss=sum(tail) / len(tail),
        seconds=time.perf_counter() - started,
        resumed_from=resumed_from,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def _batch_loss(model: Any, batch: list[Triple], hard_negatives: bool) -> torch.Tensor:
    queries = _embed(model, [t.query for t in batch])
    passages = [t.positive for t in batch] + ([t.negative for t in batch] if hard_negatives else [])
    scores = queries @ _embed(model, passages).T * SCALE
    return torch.nn.functional.cross_entropy(scores, torch.arange(len(batch)))


def _embed(model: Any, texts: list[str]) -> torch.Tensor:
    features = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in model.preprocess(texts).items()}
    return torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)


def _linear_schedule(total: int, warmup_ratio: float):
    warmup = int(total * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _restore(run: Path, model: Any, optimizer: Any, scheduler: Any) -> tuple[int, list[float]]:
    checkpoint = latest_checkpoint(run)
    if checkpoint is None:
        return 0, []
    full, state = read_checkpoint(checkpoint)
    restore(model, optimizer, full)
    scheduler.load_state_dict(state["scheduler"])
    restore_rng(checkpoint)
    return int(state["step"]), list(state.get("losses", []))
