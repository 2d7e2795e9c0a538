"""Benchmark the local embedder backends side by side (torch fp32, onnx fp32, onnx int8) and write BENCHMARKS.md.

1. Ingest throughput: `rag.ingest.ingest` (walk, read, chunk, embed, index, commit) of the same squad-long
   articles into a fresh index per backend, the backends taking turns for --rounds rounds, each keeping its
   fastest round; chunks/s, the ratio to torch fp32 and the load average after each ingest.
2. Retrieval quality: each backend ingests the --docs articles subset into its own index and answers the same
   questions with the dense retriever; evidence hit@5 and its paired difference to torch fp32 (95% interval).
3. How close the vectors are: cosine of each backend's chunk vectors to torch fp32's.

    python scripts/bench_embedder_backends.py                                   # writes BENCHMARKS.md
    python scripts/bench_embedder_backends.py --docs 20 --limit 60 --throughput-docs 4 --out /tmp/b.md  # quick
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import busy_note, loadavg, machine_rows, say, table
from models.config import load_config
from models.errors import RagtuneError
from models.storage import write_section
from ragtune.compare.evidence import DEPTH
from ragtune.compare.longdocs import COMPARED, select_corpus
from ragtune.compare.metrics import paired_difference, summary
from ragtune.compare.settings import CONTEXTUAL_KEY, first_stage
from ragtune.compose import quiet_libraries

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT.parent / "shared" / "datasets" / "squad-long"
WORK = Path.home() / ".cache" / "ragtune-bench" / "embedder-backends"
PACKAGES = ("torch", "transformers", "sentence-transformers", "onnxruntime", "onnx", "numpy", "ragtune")
# (label, overrides): the first is the reference the others are compared with.
BACKENDS = [
    ("torch fp32", ["embedder.backend=torch"]),
    ("onnx fp32", ["embedder.backend=onnx", "embedder.quantize=none"]),
    ("onnx int8", ["embedder.backend=onnx", "embedder.quantize=int8"]),
]


@dataclass(frozen=True)
class Options:
    dataset: Path  # squad-long: docs/ and questions.jsonl
    work: Path  # RAGTUNE_HOME of the indexes and the corpus copies
    docs: int = 30  # articles of the quality subset: half gold, half distractors
    limit: int = 300  # questions asked (a seeded sample of those whose gold article is in)
    seed: int = 0
    throughput_docs: int = 6  # articles ingested per round for the throughput figure
    rounds: int = 2
    overrides: tuple[str, ...] = ()
    command: str = ""


def _config(options: Options, backend: list[str], name: str) -> Any:
    # Plain chunks: every backend embeds the same 96-token texts.
    return load_config(None, [*options.overrides, *backend, f"{CONTEXTUAL_KEY}=false", f"index.name={name}"])


def load_embedders(options: Options) -> dict[str, tuple[Any, float]]:
    """Each backend's embedder and its load seconds (an ONNX export made now is part of them)."""
    from models.embedders import build_embedder

    found = {}
    for label, backend in BACKENDS:
        started = time.perf_counter()
        embedder = build_embedder(_config(options, backend, "unused").embedder)
        found[label] = (embedder, time.perf_counter() - started)
        embedder.encode(["a warm-up sentence"] * 8)
        say(f"[load] {label}: {found[label][1]:.1f} s")
    return found


def throughput(options: Options, docs: list[Path], embedders: dict[str, tuple[Any, float]]) -> list[dict[str, Any]]:
    """Ingest of `docs` per backend, taking turns; per backend its rounds' seconds and loads, and chunks."""
    import shutil

    from rag.ingest import ingest

    folder = options.work / "throughput-docs"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for path in docs:
        shutil.copyfile(path, folder / path.name)
    found = {label: {"label": label, "seconds": [], "loads": [], "chunks": 0} for label, _ in BACKENDS}
    for round_ in range(options.rounds):
        order = BACKENDS if round_ % 2 == 0 else BACKENDS[::-1]  # no backend always runs right after another
        for label, backend in order:
            config = _config(options, backend, f"throughput-{round_}")
            done = ingest([folder], config, embedders[label][0], rebuild=True, progress=False)
            found[label]["seconds"].append(done.seconds)
            found[label]["loads"].append(loadavg())
            found[label]["chunks"] = done.chunks
            say(f"[throughput] {label}: {done.chunks / done.seconds:.1f} chunks/s (load {loadavg()})")
    return list(found.values())


def quality(options: Options, corpus: Any, embedders: dict[str, tuple[Any, float]]) -> dict[str, dict[str, Any]]:
    """Per backend: its index of the subset (ingest seconds, chunks) and its dense per-question scores."""
    from rag.ingest import ingest
    from ragtune.compare.retrieval import run_settings

    dense = first_stage(["dense"])
    found = {}
    for label, backend in BACKENDS:
        name = "quality-" + label.replace(" ", "-")
        done = ingest([corpus.docs], _config(options, backend, name), embedders[label][0], rebuild=True, progress=False)

        def make_config(extra: list[str], backend: list[str] = backend, name: str = name) -> Any:
            plain = [f"{CONTEXTUAL_KEY}=false", f"index.name={name}"]
            return load_config(None, [*options.overrides, *backend, *plain, *extra, f"rag.top_k={DEPTH}"])

        runs, _ = run_settings(dense, make_config, corpus.questions, corpus.docs, embedders[label][0], progress=False)
        scores = [row[COMPARED] for row in runs[0].rows]
        found[label] = {"chunks": done.chunks, "seconds": done.seconds, "load": loadavg(), "scores": scores}
        say(f"[quality] {label}: evidence hit@5 {np.mean(scores):.3f} over {len(scores)} questions")
    return found


def closeness(options: Options, embedders: dict[str, tuple[Any, float]]) -> dict[str, tuple[float, float]]:
    """Mean and lowest cosine of each backend's chunk vectors to torch fp32's, on the throughput chunks."""
    from models.paths import index_dir
    from rag.collection import expectation, open_snapshot

    reference = embedders[BACKENDS[0][0]][0]
    config = _config(options, BACKENDS[0][1], "throughput-0")
    snapshot = open_snapshot(index_dir(config), expectation(config, reference.dim))
    try:
        stored = snapshot.store.chunks(snapshot.store.live_ids())
        texts = [stored[label].text for label in sorted(stored)][:1000]
    finally:
        snapshot.close()
    base = reference.encode(texts)
    found = {}
    for label, _ in BACKENDS[1:]:
        cosines = (embedders[label][0].encode(texts) * base).sum(axis=1)
        found[label] = (float(cosines.mean()), float(cosines.min()))
    return found


def _points(value: dict[str, Any]) -> str:
    low, high = value["ci95"]
    return f"{100 * value['mean']:+.1f} points ({100 * low:+.1f} to {100 * high:+.1f})"


def render(
    options: Options, machine: str, corpus: Any, embedders: dict, speed: list, scores: dict, cosines: dict
) -> str:
    reference = speed[0]["chunks"] / min(speed[0]["seconds"])
    speed_rows = []
    for entry in speed:
        rate = entry["chunks"] / min(entry["seconds"])
        rounds = ", ".join(f"{entry['chunks'] / s:.1f}" for s in entry["seconds"])
        loads = "; ".join(entry["loads"])
        speed_rows.append([entry["label"], f"{rate:.1f}", rounds, f"{rate / reference:.2f}x", loads])
    base = scores[BACKENDS[0][0]]
    quality_rows = []
    for label, _ in BACKENDS:
        found = scores[label]
        hit = summary(found["scores"])
        cells = [label, f"{100 * hit['mean']:.1f} ({100 * hit['ci95'][0]:.1f}-{100 * hit['ci95'][1]:.1f})"]
        cells.append("reference" if found is base else _points(paired_difference(found["scores"], base["scores"])))
        cells.append("1" if found is base else f"{cosines[label][0]:.4f} / {cosines[label][1]:.4f}")
        rate = found["chunks"] / found["seconds"]
        cells += [f"{found['chunks']} in {found['seconds']:.1f} s ({rate:.1f}/s)", found["load"]]
        cells.append(f"{embedders[label][1]:.1f} s")
        quality_rows.append(cells)
    speed_header = "backend | chunks/s (best) | each round | ÷ torch fp32 | load average after each round"
    quality_header = "backend | evidence hit@5 | - torch fp32 | cosine to torch | subset ingest | load average | load"
    return "\n\n".join(
        [
            "## Embedder backends (`scripts/bench_embedder_backends.py`)",
            f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with:\n\n```\n{options.command}\n```",
            "### Machine\n\n" + machine,
            f"### 1. Ingest throughput\n\n`ragtune ingest`'s path (`rag.ingest.ingest`: walk, read, chunk, embed, "
            f"index, commit) of the first {options.throughput_docs} squad-long articles (name order, "
            f"{speed[0]['chunks']} chunks of rag.chunk_tokens tokens, plain) into a fresh index, the backends taking "
            f"turns for {options.rounds} rounds (the order reversed each round); each backend's fastest round is "
            "its figure. The load average (1, 5, 15 min) is read after each ingest.\n\n"
            + table(speed_header, speed_rows),
            f"### 2. Retrieval quality\n\n{corpus.articles} squad-long articles ({corpus.gold_articles} gold, the rest "
            f"distractors; seed {options.seed}) ingested by each backend into its own index; {len(base['scores'])} "
            f"questions answered by the dense retriever (rag.top_k {DEPTH}). Evidence hit@5 in percent with its 95% "
            "bootstrap interval; the difference to torch fp32 is paired per question (an interval that excludes 0 "
            "is a real difference). Cosine: each backend's vectors of the throughput chunks against torch fp32's "
            "(mean / lowest). Load: seconds to build each embedder, first in this process (torch fp32, built first, "
            "also pays for importing sentence-transformers; an ONNX export made then would be included).\n\n"
            + table(quality_header, quality_rows),
        ]
    )


def run(options: Options) -> str:
    os.environ["RAGTUNE_HOME"] = str(options.work / "home")
    say(f"$ {options.command}")
    # Read before anything runs: the load and the busy check describe what the figures were measured beside.
    note = busy_note()
    machine = table("item | value", machine_rows(PACKAGES)) + (f"\n\n**Note:** {note}" if note else "")
    corpus = select_corpus(options.dataset, options.work, options.docs, options.limit, options.seed)
    say(f"[corpus] {corpus.articles} articles, {len(corpus.questions)} questions")
    embedders = load_embedders(options)
    docs = sorted((options.dataset / "docs").glob("*.txt"))[: options.throughput_docs]
    speed = throughput(options, docs, embedders)
    cosines = closeness(options, embedders)
    scores = quality(options, corpus, embedders)
    return render(options, machine, corpus, embedders, speed, scores, cosines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="report path (default: BENCHMARKS.md at repo root)")
    add("--dataset", type=Path, default=DATASET, help=f"squad-long folder (default {DATASET})")
    add("--work", type=Path, default=WORK, help=f"indexes and corpus copies (default {WORK})")
    add("--docs", type=int, default=30, help="articles of the quality subset, half gold (default 30)")
    add("--limit", type=int, default=300, help="questions asked, a seeded sample (default 300)")
    add("--seed", type=int, default=0, help="seed of the article and question samples (default 0)")
    add("--throughput-docs", type=int, default=6, help="articles ingested per round for chunks/s (default 6)")
    add("--rounds", type=int, default=2, help="throughput rounds, the backends taking turns (default 2)")
    add("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    quiet_libraries()
    options = Options(
        dataset=args.dataset,
        work=args.work,
        docs=args.docs,
        limit=args.limit,
        seed=args.seed,
        throughput_docs=args.throughput_docs,
        rounds=args.rounds,
        overrides=tuple(args.overrides),
        command=shlex.join(["python", *sys.orig_argv[1:]] if sys.orig_argv else sys.argv),
    )
    try:
        report = run(options)
    except RagtuneError as exc:
        print(f"bench_embedder_backends: error: {exc}", file=sys.stderr)
        return 2
    write_section(args.out, "bench_embedder_backends", report, title="# ragtune benchmarks")
    print(f"wrote {args.out}")
    return 0
