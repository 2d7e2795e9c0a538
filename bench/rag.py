"""Benchmark ragtune's RAG path on this machine and write the figures to BENCHMARKS.md.

1. Ingest throughput on PubMedQA contexts, against raw SentenceTransformer.encode of the same chunks.
2. Vector search: hnswlib (rag.index, index.backend=hnswlib) against exact numpy search over chunk vectors: the
   real chunk embeddings of section 1's index, topped up to --vectors with perturbed copies of them,
   queried with embedded PubMedQA questions (--random-too adds uniform random vectors, a worst case).
3. Retrieval latency (embed + search) for PubMedQA questions on the ingested index.
4. Answer latency and answer check of the default LM on examples/questions.jsonl, in the default dtype
   (auto: bfloat16 where the CPU computes it natively) and in the other of bfloat16 / float32.
5. Generation engines side by side (bench/generation.py): transformers bf16 and fp32, the llamacpp
   engine (prompt_lookup off and on) and bare llama_cpp.Llama as its ceiling, each in its own process, on
   the prompts `ask` builds for the example questions and one ~1,000-token prompt; same model, same threads.
6. llama.cpp settings (bench/weights.py): the packaged GGUF against re-quantised copies (Q8_0, Q4_0,
   IQ4_NL, BF16), flash attention off/on and micro-batch sizes, with transformers bf16 as the reference,
   taking turns in one process on the same prompts (prompt and decode tokens/s, perplexity, agreement with
   the packaged file), and the KV-cache reuse of the prompt's fixed start across questions.
7. OpenMP wait (bench/openmp.py): threads that sleep at once, spin briefly (the default) or spin
   long, each in fresh processes: llamacpp alone, transformers bf16 alone, two llamacpp processes at once.

    python scripts/bench_rag.py                                # full size, writes BENCHMARKS.md
    python scripts/bench_rag.py --quick --out /tmp/bench.md    # small sizes, a smoke test
    python scripts/bench_rag.py --gen-only                     # section 5 alone (its own BENCHMARKS.md section)
    python scripts/bench_rag.py --weights --answers 3          # section 6 alone, one section per --model
    python scripts/bench_rag.py --openmp --answers 6 --gen-tokens 48   # section 7 alone (OpenMP wait)

Indexes go to a fresh temporary RAGTUNE_HOME (the user's indexes are never touched); models are read
from RAGTUNE_CACHE as usual. PubMedQA documents are the CONTEXTS paragraphs only, never LONG_ANSWER.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import models  # noqa: F401  (sets how OpenMP threads wait before torch loads libgomp: models/__init__.py)

# isort: split
from bench.common import machine_rows, say, table
from bench.rag_answers import bench_answers
from bench.rag_generation import bench_generation, generation_prompts
from bench.rag_ingest import bench_ingest, bench_retrieval
from bench.rag_search import bench_search, blas_threads
from bench.weights import WEIGHT_TYPES
from models.config import load_config
from models.embedders import build_embedder
from models.embedding import Embedder
from models.errors import RagtuneError
from models.storage import write_section
from ragtune.compose import quiet_libraries

ROOT = Path(__file__).resolve().parents[1]
PUBMEDQA = ROOT.parent / "shared" / "datasets" / "pubmedqa" / "ori_pqal.json"  # ../shared beside the checkout
FULL = {"docs": 1000, "vectors": 100_000, "queries": 200, "questions": 200, "answers": None}
QUICK = {"docs": 50, "vectors": 10_000, "queries": 50, "questions": 20, "answers": 2}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="report path (default: BENCHMARKS.md at repo root)")
    add("--quick", action="store_true", help="small sizes for a smoke test: " + json.dumps(QUICK))
    add("--pubmedqa", type=Path, default=PUBMEDQA, help=f"PubMedQA ori_pqal.json (default {PUBMEDQA})")
    add("--docs", type=int, help=f"PubMedQA records to ingest (default {FULL['docs']})")
    add("--vectors", type=int, help=f"chunk vectors to search, real + perturbed copies (default {FULL['vectors']:,})")
    add("--queries", type=int, help=f"PubMedQA questions as vector-search queries (default {FULL['queries']})")
    add("--questions", type=int, help=f"PubMedQA questions for retrieval latency (default {FULL['questions']})")
    add("--answers", type=int, help="example questions answered by the LM (default all)")
    add("--ef-extra", type=int, nargs="*", default=[128, 256, 512, 1024], help="ef_search values besides the config's")
    add(
        "--noise",
        type=float,
        default=0.62,
        help="norm of the Gaussian noise in each perturbed copy (default 0.62: cosine ~0.85 to its source)",
    )
    add("--random-too", action="store_true", help="also search uniform random vectors (a worst case)")
    add("--seed", type=int, default=0, help="numpy seed for copies, insertion order and random vectors (default 0)")
    add("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override")
    add("--gen-only", action="store_true", help="run section 5 (generation engines) alone")
    add("--model", help="LM for section 5 (default llm.model)")
    add("--gen-tokens", type=int, default=128, help="most new tokens per answer in sections 5 and 7 (default 128)")
    add("--gen-engines", nargs="*", help="engines for section 5 (default all: see bench/generation.py)")
    add("--weights", action="store_true", help="run section 6 (llama.cpp weight types and settings) alone")
    add(
        "--weight-types",
        nargs="*",
        default=["Q8_0", "Q4_0", "IQ4_NL", "BF16"],
        choices=WEIGHT_TYPES,
        metavar="TYPE",
        help=f"types to re-quantise to (section 6): {', '.join(WEIGHT_TYPES)}",
    )
    add("--weight-rounds", type=int, default=3, help="turns each setting takes on the prompts (section 6)")
    add("--openmp", action="store_true", help="run section 7 (how OpenMP threads wait) alone")
    add("--openmp-rounds", type=int, default=2, help="turns each OpenMP wait setting takes (section 7)")
    args = parser.parse_args()
    if args.weight_rounds < 1:
        parser.error(f"--weight-rounds must be at least 1, not {args.weight_rounds}")
    if args.openmp_rounds < 1:
        parser.error(f"--openmp-rounds must be at least 1, not {args.openmp_rounds}")
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


@contextlib.contextmanager
def bench_home() -> Iterator[Path]:
    """A fresh temporary RAGTUNE_HOME for the indexes a benchmark builds (the user's are never touched)."""
    with tempfile.TemporaryDirectory(prefix="ragtune-bench-") as tmp:
        os.environ["RAGTUNE_HOME"] = str(Path(tmp) / "home")
        yield Path(tmp)


def write_report(args: argparse.Namespace, section: str, heading: str, header: list[str], parts: list[str]) -> int:
    """One section of the report: its heading, how it was measured (`header`), then its parts; atomic."""
    write_section(args.out, section, "\n\n".join([heading, *header, *parts]), title="# ragtune benchmarks")
    say(f"wrote {args.out}")
    return 0


def measured(command: str, rows: list[tuple[str, str]], note: str = "") -> list[str]:
    """When and with which command the figures were measured, and the machine."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return [f"Measured {when} with:\n\n```\n{command}\n```{note}", "### Machine\n\n" + table("item | value", rows)]


def model_section(name: str, model: str | None) -> str:
    """One report section per model: the default LM's keeps `name`, another model's gets its own."""
    return name + (f"_{model.replace('.', '_')}" if model else "")


def default_embedder(args: argparse.Namespace) -> Embedder:
    return build_embedder(load_config(None, args.overrides).embedder)


def weights_only(args: argparse.Namespace, command: str, rows: list[tuple[str, str]]) -> int:
    """Section 6 alone: llama.cpp weight types, attention and batch sizes, in one child process."""
    from bench.weights import render

    with bench_home():
        config, prompts, count = generation_prompts(args, default_embedder(args))
        threads = config.llm.threads or len(os.sched_getaffinity(0))
        load = os.getloadavg()[0]
        child = [sys.executable, "-m", "bench.weights", config.llm.model, str(threads), str(prompts)]
        child += [str(args.weight_rounds), *args.weight_types]
        done = subprocess.run(child, stdout=subprocess.PIPE, text=True, cwd=ROOT, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = f"{load:.2f} before, {os.getloadavg()[0]:.2f} after (1-minute load average)"
    result["questions"] = count
    heading = f"## llama.cpp settings: {config.llm.model} (`scripts/bench_rag.py --weights`)"
    section = model_section("bench_weights", config.llm.model)
    return write_report(args, section, heading, measured(command, rows), [render(result)])


def openmp_only(args: argparse.Namespace, command: str, rows: list[tuple[str, str]]) -> int:
    """Section 7 alone: how OpenMP threads wait, each setting in fresh child processes."""
    from bench.openmp import measure, render

    with bench_home():
        config, prompts, _ = generation_prompts(args, default_embedder(args))
        threads = config.llm.threads or len(os.sched_getaffinity(0))
        load = os.getloadavg()[0]
        result = measure(config.llm.model, threads, prompts, args.gen_tokens, args.openmp_rounds)
    result["load"] = f"{load:.2f} before, {os.getloadavg()[0]:.2f} after (1-minute load average)"
    heading = f"## OpenMP wait: {config.llm.model} (`scripts/bench_rag.py --openmp`)"
    section = model_section("bench_openmp", config.llm.model)
    return write_report(args, section, heading, measured(command, rows), [render(result)])


def gen_only(args: argparse.Namespace, command: str, rows: list[tuple[str, str]]) -> int:
    """Section 5 alone, written to its own section of the report."""
    with bench_home():
        generation_md = bench_generation(args, default_embedder(args))
    heading = f"## Generation engines{f': {args.model}' if args.model else ''} (`scripts/bench_rag.py --gen-only`)"
    section = model_section("bench_generation", args.model)
    return write_report(args, section, heading, measured(command, rows), [generation_md])


def main() -> int:
    args = parse_args()
    quiet_libraries()
    command = shlex.join(sys.orig_argv)
    say(f"$ {command}")
    rows = machine_rows(
        ("torch", "transformers", "sentence-transformers", "hnswlib", "numpy", "llama-cpp-python"),
        extra=(("numpy BLAS threads (default)", blas_threads()),),
    )
    for name, value in rows:
        say(f"[machine] {name}: {value}")
    try:
        return run(args, command, rows)
    except RagtuneError as exc:  # a bad --model, --set or model file: one line naming it, as ragtune says it
        print(f"bench_rag.py: error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, command: str, rows: list[tuple[str, str]]) -> int:
    """The sections the flags ask for, written to args.out."""
    if args.gen_only:
        return gen_only(args, command, rows)
    if args.weights:
        return weights_only(args, command, rows)
    if args.openmp:
        return openmp_only(args, command, rows)
    records = json.loads(args.pubmedqa.read_text(encoding="utf-8"))
    with bench_home() as tmp:
        ingest_md, retriever = bench_ingest(args, records, tmp, args.overrides)
        search_md = bench_search(args, records, retriever)
        retrieval_md = bench_retrieval(args, records, retriever)
        answers_md = bench_answers(args, retriever.embedder, args.overrides)
        generation_md = bench_generation(args, retriever.embedder)
    quick = "\n\nQuick mode: small sizes, a smoke test, not representative figures." if args.quick else ""
    heading = "## Retrieval-augmented answering (`scripts/bench_rag.py`)"
    parts = [ingest_md, search_md, retrieval_md, answers_md, generation_md]
    return write_report(args, "bench_rag", heading, measured(command, rows, quick), parts)
