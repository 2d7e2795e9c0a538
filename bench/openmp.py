"""How OpenMP threads wait, side by side: sleep at once, spin briefly (ragtune's default), spin long.

libgomp reads its wait variables once, when it loads, so every setting runs in fresh child processes (the
generation benchmark's, `bench.generation`) on the same prompts: the llamacpp engine alone, transformers
bf16 alone, and two llamacpp processes at once on the same cores, the case where a spinning thread that the
scheduler has set aside holds up every barrier of its process. Settings take turns, round after round, so
their ratios hold under the same load.
"""

from __future__ import annotations

import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.generation import run_child, summarise
from models import OPENMP_SPIN_ROUNDS

# label -> the OpenMP wait variables its processes start with (libgomp's own default spin is 300,000 rounds).
SETTINGS: dict[str, dict[str, str]] = {
    "sleep at once (OMP_WAIT_POLICY=PASSIVE)": {"OMP_WAIT_POLICY": "PASSIVE"},
    f"spin {OPENMP_SPIN_ROUNDS} rounds, then sleep (GOMP_SPINCOUNT={OPENMP_SPIN_ROUNDS}, ragtune's default)": {
        "GOMP_SPINCOUNT": OPENMP_SPIN_ROUNDS
    },
    "spin 300,000 rounds (libgomp's default)": {"GOMP_SPINCOUNT": "300000"},
}
# case -> the engines (bench.generation labels) that run at once in it, each in its own process
CASES: dict[str, list[str]] = {
    "llamacpp alone": ["llamacpp"],
    "transformers bf16 alone": ["transformers bf16"],
    "llamacpp, two processes at once": ["llamacpp", "llamacpp"],
}
FIGURES = ("rag_decode", "rag_prefill", "rag_total")


def _runs(engines: list[str], wait: dict[str, str], model: str, threads: int, prompts: Path, max_new: int) -> list:
    """`engines` at once, each in a fresh child process started with the OpenMP variables `wait`."""

    def child(label: str) -> dict[str, Any]:
        return run_child(label, model, threads, prompts, max_new, timeout=1800, openmp_wait=wait)

    with ThreadPoolExecutor(len(engines)) as pool:
        return list(pool.map(child, engines))


def measure(model: str, threads: int, prompts: Path, max_new: int, rounds: int) -> dict[str, Any]:
    """Per setting and case: the median over rounds (and over both processes of a pair) of each figure."""
    seen: dict[tuple[str, str], dict[str, list[float]]] = {}
    for _ in range(rounds):
        for case, engines in CASES.items():
            for label, wait in SETTINGS.items():
                for run in _runs(engines, wait, model, threads, prompts, max_new):
                    if "error" in run:
                        raise RuntimeError(f"{case}, {label}: {' '.join(run['error'])}")
                    figures = summarise(run)
                    for key in FIGURES:
                        seen.setdefault((case, label), {}).setdefault(key, []).append(figures[key])
    cells = {
        f"{case} | {label}": {k: statistics.median(v) for k, v in got.items()} for (case, label), got in seen.items()
    }
    return {"model": model, "threads": threads, "rounds": rounds, "max_new": max_new, "cells": cells}


def render(result: dict[str, Any]) -> str:
    """One table per case: each setting's figures and its decode ratio to sleeping at once."""
    from bench.common import table

    passive = next(iter(SETTINGS))
    parts = []
    for case in CASES:
        base = result["cells"][f"{case} | {passive}"]["rag_decode"]
        rows = []
        for label in SETTINGS:
            cell = result["cells"][f"{case} | {label}"]
            rows.append(
                (
                    label,
                    f"{cell['rag_decode']:.1f} ({cell['rag_decode'] / base:.2f}×)",
                    f"{cell['rag_prefill']:.0f}",
                    f"{cell['rag_total']:.2f} s",
                )
            )
        header = "setting | decode tokens/s p50 (÷ sleeping at once) | prompt tokens/s p50 | RAG answer total p50"
        parts.append(f"**{case}**\n\n" + table(header, rows))
    return (
        f"### 7. OpenMP wait side by side\n\n`{result['model']}`, {result['threads']} threads, greedy, at most "
        f"{result['max_new']} new tokens, on the RAG prompts `ask` builds for the example questions (the "
        "generation benchmark's prompts and child processes). Each setting starts fresh processes with its "
        "variables (libgomp reads them once); settings take turns, "
        f"{result['rounds']} rounds; medians over rounds and over both processes of a pair. Load: "
        f"{result['load']}.\n\n" + "\n\n".join(parts)
    )
