#!/usr/bin/env python
"""Benchmark LoRA against full fine-tuning on this machine and write the figures into BENCHMARKS.md.

For the small LM (smollm2-135m-instruct) and the default LM (qwen2.5-coder-0.5b-instruct), each trained
with finetune.method=lora and =full on the same data for the same number of steps: training tokens/s,
seconds per step, peak RAM, trainable parameters (count and share), adapter (or model) size on disk, loss
first -> last and, for LoRA, the merge time (load base + apply adapter + merge_adapter). Every
(model, method) combination runs in its own subprocess, because peak RSS (getrusage ru_maxrss) is per
process and only ever grows. A combination that fails (MemoryError, a process killed by the kernel's
out-of-memory killer, a timeout) is reported as failed with the reason; the others still run. Where
torch sees a CUDA GPU the same table is produced for device cuda too.

    python scripts/bench_finetune.py                                   # full size, writes BENCHMARKS.md
    python scripts/bench_finetune.py --skip-full-default               # without the ~10 GB full 0.5B row
    python scripts/bench_finetune.py --quick --out /tmp/bench_ft.md    # small LM, tiny sizes, a smoke test

Training data: prompt/completion JSONL from PubMedQA's 500 non-test ids (ids not in
test_ground_truth.json): each prompt holds the record's CONTEXTS (cut to fit finetune.max_seq_len with
every benchmarked model's chat template) and its QUESTION, the completion is final_decision. Never
LONG_ANSWER. The report goes between the markers `<!-- bench_finetune:start -->` and
`<!-- bench_finetune:end -->` of --out, replacing an earlier section there and keeping the rest of the
file (appended at the end where the markers are absent). Adapters go to a fresh temporary RAGTUNE_HOME
(the user's adapters are never touched); models are read from RAGTUNE_CACHE as usual.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import busy_note, loadavg, machine_rows, say
from bench.finetune_data import build_data
from bench.finetune_one import run_one, slug
from bench.finetune_report import report
from models.config import LLMConfig
from models.device import resolve_dtype
from models.storage import write_section
from ragtune.compose import quiet_libraries

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_finetune.py"  # what a child process runs for one combination (--one)
PUBMEDQA = ROOT.parent / "shared" / "datasets" / "pubmedqa" / "ori_pqal.json"  # ../shared beside the checkout
SMALL_LM = "smollm2-135m-instruct"
DEFAULT_LM = LLMConfig().model  # qwen2.5-coder-0.5b-instruct
METHODS = ("lora", "full")
FULL = {"models": [SMALL_LM, DEFAULT_LM], "steps": 5, "batch_size": 4, "max_seq_len": 256}
QUICK = {"models": [SMALL_LM], "steps": 2, "batch_size": 2, "max_seq_len": 128}


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:  # a number with no signal name
            name = str(-code)
        likely = " (likely the kernel's out-of-memory killer)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{likely}"
    return f"exited with code {code} without a result"


def spawn(args: argparse.Namespace, model: str, method: str, device: str, data: Path, work: Path) -> dict[str, Any]:
    """Run one combination in a fresh interpreter; its figures, or {"error": reason}."""
    json_out = work / f"{slug(model)}-{method}-{device}.json"
    command = [sys.executable, str(SCRIPT), "--one", model, method, "--device", device]
    command += ["--json-out", str(json_out), "--data", str(data), "--steps", str(args.steps)]
    command += ["--batch-size", str(args.batch_size), "--max-seq-len", str(args.max_seq_len)]
    for override in args.overrides:
        command += ["--set", override]
    say(f"[run] {model} / {method} / {device}: starting a subprocess")
    started = time.perf_counter()
    try:
        code = subprocess.run(command, env=os.environ.copy(), timeout=args.timeout).returncode
    except subprocess.TimeoutExpired:
        code = None
    wall = time.perf_counter() - started
    if json_out.is_file():
        out = json.loads(json_out.read_text(encoding="utf-8"))
    elif code is None:
        out = {"error": f"timed out after {args.timeout:.0f}s (--timeout) and was killed"}
    else:
        out = {"error": describe_exit(code)}
    out["wall_s"] = wall
    if "error" in out:
        say(f"[run] {model} / {method} / {device}: FAILED after {wall:.0f}s: {out['error']}")
    else:
        say(f"[run] {model} / {method} / {device}: done in {wall:.0f}s")
    return out


def run_all(args: argparse.Namespace) -> int:
    quiet_libraries()
    command = shlex.join(sys.orig_argv)
    say(f"$ {command}")
    cpu_dtype = str(resolve_dtype("auto", "cpu")).removeprefix("torch.")
    rows = machine_rows(
        ("torch", "transformers", "peft", "accelerate"), extra=(("llm.dtype=auto on CPU resolves to", cpu_dtype),)
    )
    for name, value in rows:
        say(f"[machine] {name}: {value}")
    busy = busy_note()
    if busy:
        say(f"[machine] WARNING: {busy}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.cpu_only else [])
    if "cuda" not in devices:
        say("[machine] no GPU on this machine (or --cpu-only): the cuda table is skipped")
    started = time.perf_counter()
    tables: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="ragtune-bench-ft-") as tmp:
        work = Path(tmp)
        os.environ["RAGTUNE_HOME"] = str(work / "home")
        data_path = work / "pubmedqa-train.jsonl"
        data = build_data(args, data_path)
        for device in devices:
            results = []
            for model in args.models:
                for method in METHODS:
                    if method == "full" and model == DEFAULT_LM and args.skip_full_default:
                        results.append((model, method, {"skipped": "--skip-full-default"}))
                        say(f"[run] {model} / {method} / {device}: skipped (--skip-full-default)")
                        continue
                    results.append((model, method, spawn(args, model, method, device, data_path, work)))
            tables[device] = results
    total_s = time.perf_counter() - started
    section = report(args, command, rows, data, tables, total_s, loadavg(), busy)
    write_section(args.out, "bench_finetune", section, title="# ragtune benchmarks")
    say(section)
    say(f"wrote the fine-tuning section of {args.out} ({total_s / 60:.1f} min)")
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="report path (default: BENCHMARKS.md at repo root)")
    add("--quick", action="store_true", help="small sizes for a smoke test: " + json.dumps(QUICK))
    add("--pubmedqa", type=Path, default=PUBMEDQA, help=f"PubMedQA ori_pqal.json (default {PUBMEDQA})")
    add("--models", nargs="+", metavar="MODEL", help=f"LM presets or folders (default {' '.join(FULL['models'])})")
    add("--steps", type=int, help=f"optimizer steps per run (default {FULL['steps']})")
    add("--batch-size", type=int, help=f"examples per step (default {FULL['batch_size']})")
    add("--max-seq-len", type=int, help=f"tokens per example at most (default {FULL['max_seq_len']})")
    add("--skip-full-default", action="store_true", help=f"skip full fine-tuning of {DEFAULT_LM} (~10+ GB RAM)")
    add("--cpu-only", action="store_true", help="no cuda table even where torch sees a GPU")
    add("--timeout", type=float, default=7200, help="seconds one combination may run before it is killed (7200)")
    add("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override")
    # Hidden: how the benchmark runs one combination in a subprocess of its own.
    add("--one", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    add("--device", default="cpu", choices=["cpu", "cuda"], help=argparse.SUPPRESS)
    add("--json-out", type=Path, help=argparse.SUPPRESS)
    add("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.one is not None and (args.json_out is None or args.data is None):
        parser.error("--one needs --json-out and --data")
    if args.one is not None and args.one[1] not in METHODS:
        parser.error(f"--one: method should be one of {', '.join(METHODS)}")
    for key in ("steps", "batch_size", "max_seq_len"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} should be positive")
    return args


def main() -> int:
    args = parse_args()
    if args.one is not None:
        return run_one(args)
    return run_all(args)
