"""Section 5 of the RAG benchmark: generation engines side by side (bench/generation.py in child processes),
and the memory of GGUF LoRAs resident over the llama.cpp base (bench/lora_memory.py)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from bench.common import say
from bench.generation import ENGINES, build_prompts, report, run_child
from bench.lora_memory import random_adapters
from models.config import Config, load_config
from models.device import resolve_dtype
from models.embedding import Embedder
from rag.ingest import ingest

ROOT = Path(__file__).resolve().parents[1]


def generation_prompts(args: argparse.Namespace, embedder: Embedder) -> tuple[Config, Path, int]:
    """The prompts `ask` builds for the example questions plus a ~1,000-token one, in a JSON file."""
    model = ["llm.model=" + args.model] if args.model else []
    config = load_config(None, ["index.name=examples-gen", *args.overrides, *model])
    ingest([ROOT / "examples" / "docs"], config, embedder, progress=False)
    lines = (ROOT / "examples" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line) for line in lines if line.strip()][: args.answers]
    path = Path(os.environ["RAGTUNE_HOME"]) / "gen-prompts.json"
    path.write_text(
        json.dumps(build_prompts(config, embedder, questions, ROOT / "examples" / "docs")), encoding="utf-8"
    )
    return config, path, len(questions)


def bench_generation(args: argparse.Namespace, embedder: Embedder) -> str:
    config, path, count = generation_prompts(args, embedder)
    threads = config.llm.threads or len(os.sched_getaffinity(0))
    engines = args.gen_engines or list(ENGINES)

    # Three LoRAs (r=8 on all 7 projections): the first is the "+ LoRA" engines' adapter, all three are resident
    # in the memory measurement.
    adapters = random_adapters(config.llm.model, Path(os.environ["RAGTUNE_HOME"]) / "bench-loras")
    load = os.getloadavg()
    runs = [
        run_child(e, config.llm.model, threads, path, args.gen_tokens, timeout=1800, adapter=adapters[0])
        for e in engines
    ]
    runs.append(run_child("alternating", config.llm.model, threads, path, args.gen_tokens, timeout=1800))
    load = f"{load[0]:.2f} before, {os.getloadavg()[0]:.2f} after (1-minute load average)"
    default = resolve_dtype("auto", "cpu")
    reference = "transformers bf16" if default == torch.bfloat16 else "transformers fp32"
    text, ratios = report(runs, reference)
    ratios.append(lora_memory(config.llm.model, threads, adapters))
    for line in ratios:
        say(f"[gen] {line}")
    return (
        f"### 5. Generation engines side by side\n\n`{config.llm.model}`, {threads} threads for every engine, greedy, "
        f"at most {args.gen_tokens} new tokens; {count} RAG prompts built as `ask` builds them "
        f"(examples/docs, default retrieval) plus one {runs[0].get('prompts', [{}])[-1].get('prompt_tokens', '?')}"
        "-token prompt (the example documents). Each engine in its own process (its peak RSS is its own), one "
        "warm-up generation first. llamacpp keeps the previous prompt in its KV cache, so the RAG prompts "
        "(which share the system prompt) evaluate only what differs; the bare row does the same (llama_cpp's "
        f"own prefix reuse). Then llamacpp and bare take turns in one process on the same prompts, so their "
        f"decode ratio is measured under the same load. The + LoRA engines answer through one LoRA (r=8 on all 7 "
        "projections, random weights: its answers differ from the base's; PEFT on transformers, its GGUF export "
        f"on llamacpp). transformers' default dtype here: {reference}. "
        f"Load: {load}.\n\n" + text + "\n\n" + "\n".join(f"- {line}" for line in ratios)
    )


def lora_memory(model: str, threads: int, folders: list[Path]) -> str:
    """RSS of the llamacpp base alone and with the 3 GGUF LoRAs resident (a child process's own figures)."""
    command = [sys.executable, "-m", "bench.lora_memory", model, str(threads), *map(str, folders)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if done.returncode != 0:
        return f"llamacpp RSS with 3 GGUF LoRAs: the measurement failed (exit status {done.returncode}, printed above)"
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    base, last = figures["base"], figures["adapters"][-1]
    steps = " → ".join(f"{mb:.0f}" for mb in [base, *figures["adapters"]])
    return (
        f"llamacpp RSS, base alone → with 1, 2, 3 GGUF LoRAs resident (r=8 on all 7 projections, "
        f"{figures['adapter_mb'][0]} MB each): {steps} MB = {last / base:.2f}× (target ≤ 1.3×)"
    )
