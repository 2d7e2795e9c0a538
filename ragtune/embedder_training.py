"""`ragtune train --target embedder`: the user's documents -> chunks as ingest cuts them -> training triples ->
the embedder trained and published under its name (finetune/embedder_store.py), resumable after a crash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from finetune.embedder_pairs import Passage, build_triples
from finetune.embedder_store import publish_embedder
from finetune.embedder_train import EmbedderTraining, embedder_run_dir, resume_run, start_run, train_embedder
from models.config import Config
from models.embedders import build_embedder
from models.errors import InputError
from models.loading import embedder_folder
from models.storage import sha256_file
from models.trained_embedders import MANIFEST, check_embedder_name, embedder_fingerprint
from ragtune.data.corpus import document_chunks

_LM_QUERIES = "lm-queries.jsonl"


@dataclass(frozen=True)
class TrainedEmbedderRun:
    name: str
    path: Path
    chunks: int  # chunks of the documents
    used: int  # chunks trained on (finetune.embedder.max_chunks)
    queries_seconds: float
    training: EmbedderTraining


def train_embedder_on_docs(
    config: Config,
    docs: list[Path],
    name: str,
    resume: bool = False,
    progress: bool = True,
    note: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True),
) -> TrainedEmbedderRun:
    check_embedder_name(name)
    if config.embedder.backend != "torch":
        raise InputError(
            f"embedder.backend={config.embedder.backend}: an embedder trains on this machine with PyTorch; "
            "run the training with --set embedder.backend=torch --set embedder.quantize=none"
        )
    settings, seed = config.finetune.embedder, config.finetune.seed
    embedder = build_embedder(config.embedder)
    chunks = document_chunks(docs, config, embedder)
    if not chunks:
        raise InputError(
            f"no readable document under {', '.join(map(str, docs))}: give a folder of .txt, .md, .pdf, .docx or "
            ".html files (the ones `ragtune ingest` reads)"
        )
    passages = [Passage(c.id, c.source, c.text) for c in chunks]
    used = _sample(passages, settings.max_chunks, seed)
    base = embedder_folder(config.embedder.model)
    facts = {
        "base": config.embedder.model,
        "docs": [str(Path(d).resolve()) for d in docs],
        "chunks_sha256": _passages_sha256(used),
        "queries": settings.queries,
        "seed": seed,
        # What shapes the run; save_every may change between a crash and its resume.
        "settings": {k: v for k, v in dataclasses.asdict(settings).items() if k != "save_every"},
    }
    run = embedder_run_dir(name)
    started = time.perf_counter()
    if resume and (run / "run.json").is_file():
        triples = resume_run(run, facts)
        note(f"resuming {name}: {len(triples)} training queries from {run}")
    else:
        if not resume and run.exists():
            shutil.rmtree(run)
        run.mkdir(parents=True, exist_ok=True)
        lm_queries = _lm_queries(config, used, run, progress) if settings.queries == "lm" else None
        triples = build_triples(used, settings.queries, seed, lm_queries)
        start_run(run, triples, facts)
        note(f"{len(triples)} training queries ({settings.queries}) from {len(used)} of {len(passages)} chunks")
    queries_seconds = time.perf_counter() - started
    training = train_embedder(embedder.model, triples, run, settings, seed, progress)
    manifest = {
        "base": config.embedder.model,
        "base_fingerprint": _base_fingerprint(base),
        "data": {"docs": facts["docs"], "chunks": len(used), "sha256": facts["chunks_sha256"]},
        "queries": {"method": settings.queries, "count": len(triples), "seconds": round(queries_seconds, 1)},
        "steps": training.steps,
        "loss": round(training.loss, 4),
        "seconds": round(training.seconds, 1),
        "peak_rss_mb": round(training.peak_rss_mb),
        "seed": seed,
        "settings": dataclasses.asdict(settings),
    }
    path = publish_embedder(embedder.model, name, manifest)
    shutil.rmtree(run, ignore_errors=True)  # published: the checkpoints and triples have done their job
    return TrainedEmbedderRun(name, path, len(passages), len(used), queries_seconds, training)


def _sample(passages: list[Passage], limit: int | None, seed: int) -> list[Passage]:
    if limit is None or len(passages) <= limit:
        return passages
    chosen = sorted(random.Random(seed).sample(range(len(passages)), limit))
    return [passages[i] for i in chosen]


def _passages_sha256(passages: list[Passage]) -> str:
    digest = hashlib.sha256()
    for passage in passages:
        digest.update(f"{passage.id}\0{passage.text}\0".encode())
    return digest.hexdigest()


def _base_fingerprint(folder: Path) -> str:
    if (folder / MANIFEST).is_file():  # a trained embedder trained further
        return embedder_fingerprint(folder)
    digest = hashlib.sha256()  # the packaged model or a plain folder: its weights
    for weights in sorted(folder.rglob("*.safetensors")):
        digest.update(f"{weights.relative_to(folder).as_posix()}:{sha256_file(weights)}\n".encode())
    return digest.hexdigest()[:16]


def _lm_queries(config: Config, passages: list[Passage], run: Path, progress: bool) -> dict[str, list[str]]:
    """Questions the local LM writes per chunk (`data synth`, one pair per chunk), resumable in the run folder."""
    from finetune.synth import SourceChunk, synthesize
    from ragtune.compose import build_generator

    out = run / _LM_QUERIES
    generator = build_generator(replace(config, mode="rag"))  # the base model writes the questions
    chunks = [SourceChunk(p.id, p.source, p.text) for p in passages]
    synthesize(chunks, generator, out, pairs_per_chunk=1, seed=config.finetune.seed, progress=progress)
    queries: dict[str, list[str]] = defaultdict(list)
    for line in out.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        queries[record["chunk"]].append(record["prompt"])
    return dict(queries)
