"""Retrieval latency at a larger index, and ingest throughput against raw `SentenceTransformer.encode`.

The large index is cheap to build: the real chunks of an ingested index (texts and vectors read back),
topped up with perturbed copies: each a random real chunk with a share of its words dropped and Gaussian
noise of a given norm added to its vector (re-normalised). Copies keep the topic structure of real chunks
for both the vector side and the word side, without embedding anything.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from models.config import Config, load_config
from models.paths import index_dir
from models.storage import atomic_write_json, read_json
from ragtune.compare.phases import digest
from ragtune.compare.tables import say

_BATCH = 10_000  # vectors handed to the index at once


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _drop_words(text: str, share: float, rng: np.random.Generator) -> str:
    words = text.split()
    kept = [w for w, keep in zip(words, rng.random(len(words)) >= share) if keep]
    return " ".join(kept or words[:1])


def grown_index(
    source: Config, overrides: list[str], dim: int, size: int, *, noise: float, drop: float, seed: int, work: Path
) -> tuple[str, dict[str, Any]]:
    """An index named by its inputs holding `size` chunks: `source`'s real ones plus perturbed copies.

    It is written with `overrides` (the source's settings) and reused from `work` when the same source,
    size, noise, drop and seed built it before.
    """
    from rag.collection import Writer, current_generation, expectation, open_snapshot

    root = index_dir(source)
    snapshot = open_snapshot(root, expectation(source, dim))
    name = f"scaled-{digest(snapshot.generation, source.index.name, size, noise, drop, seed)[:12]}"
    config = load_config(None, [*overrides, f"index.name={name}"])
    record_file = work / "records" / f"{name}.json"
    if record_file.is_file() and current_generation(index_dir(config)) is not None:
        snapshot.close()
        return name, {**read_json(record_file, "scaled index record"), "reused": True}
    started = time.perf_counter()
    ids = snapshot.store.live_ids()
    chunks = snapshot.store.chunks(ids)
    real = _unit(snapshot.index.vectors(ids))
    rng = np.random.default_rng(seed)
    with (writer := Writer(index_dir(config), config, dim, rebuild=True)) as draft:
        by_path: dict[str, list[int]] = {}
        for position, label in enumerate(ids):
            by_path.setdefault(chunks[label].path, []).append(position)
        order: list[int] = []
        for path, positions in by_path.items():  # the real documents, as ingested
            texts = [(chunks[ids[p]].locator, chunks[ids[p]].text) for p in positions]
            draft.store.add_document(path, "scaled", "real", 0, texts)
            order += positions
        vectors = [real[order]]
        copies = rng.integers(0, len(ids), size=max(0, size - len(ids)))
        for start in range(0, len(copies), 50):  # 50 copies per made-up document
            group = copies[start : start + 50]
            texts = [("", _drop_words(chunks[ids[p]].text, drop, rng)) for p in group]
            draft.store.add_document(f"copies/copy-{start // 50:06d}.txt", "scaled", "copy", 0, texts)
            noisy = real[group] + rng.standard_normal((len(group), dim), dtype=np.float32) * np.float32(
                noise / np.sqrt(dim)
            )
            vectors.append(_unit(noisy))
        data = np.concatenate(vectors).astype(np.float32)
        for start in range(0, len(data), _BATCH):
            draft.index.add(data[start : start + _BATCH], list(range(start, min(start + _BATCH, len(data)))))
        writer.commit()
    snapshot.close()
    cosine = float(np.mean([data[len(ids) + i] @ real[c] for i, c in enumerate(copies[:1000])])) if len(copies) else 1
    record = {"chunks": len(data), "real": len(ids), "copies": len(copies), "cosine": round(cosine, 3)}
    record |= {"build_s": round(time.perf_counter() - started, 1), "noise": noise, "drop": drop, "seed": seed}
    atomic_write_json(record_file, record)
    say(f"[scale] {name}: {record}")
    return name, {**record, "reused": False}


def throughput(docs: list[Path], overrides: list[str], embedder: Any, work: Path, rounds: int = 2) -> dict[str, Any]:
    """Ingest of `docs` into a fresh index against raw `SentenceTransformer.encode` of the chunks it stored.

    The two alternate for `rounds` rounds and each side keeps its fastest: on a shared machine a burst of
    other work slows whichever side it lands on. Raw encode gets the exact texts ingest embedded when
    chunks are stored as embedded (no contextual prefix): callers pass rag.contextual=false where it exists.
    """
    import shutil

    from models.errors import ConfigError
    from rag.collection import expectation, open_snapshot
    from rag.ingest import ingest

    if getattr(embedder, "model", None) is None:  # embedder.backend=openai: no local model to encode with
        raise ConfigError("the ingest throughput is measured against a local raw encode; set embedder.backend=torch")
    folder = work / "throughput-docs"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for path in docs:
        shutil.copyfile(path, folder / path.name)
    config = load_config(None, [*overrides, "index.name=throughput"])
    embedder.encode([p.read_text(encoding="utf-8")[:2000] for p in docs[:8]])  # warm-up
    ingest_s, raw_s, chunks = [], [], 0
    for _ in range(rounds):
        summary = ingest([folder], config, embedder, rebuild=True, progress=False)
        ingest_s.append(summary.seconds)
        chunks = summary.chunks
        snapshot = open_snapshot(index_dir(config), expectation(config, embedder.dim))
        stored = snapshot.store.chunks(snapshot.store.live_ids())
        texts = [stored[label].text for label in sorted(stored)]
        snapshot.close()
        started = time.perf_counter()
        embedder.model.encode(texts, batch_size=embedder.batch_size, normalize_embeddings=True, show_progress_bar=False)
        raw_s.append(time.perf_counter() - started)
    ingest_rate, raw_rate = chunks / min(ingest_s), len(texts) / min(raw_s)
    say(f"[throughput] ingest {ingest_rate:.1f} chunks/s, raw encode {raw_rate:.1f} chunks/s (best of {rounds})")
    return {
        "documents": len(docs),
        "chunks": chunks,
        "rounds": rounds,
        "ingest_s": ingest_s,
        "raw_s": raw_s,
        "ingest_rate": ingest_rate,
        "raw_rate": raw_rate,
        "ratio": ingest_rate / raw_rate,
        "batch_size": embedder.batch_size,
    }
