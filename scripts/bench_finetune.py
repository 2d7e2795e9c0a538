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
import gc
import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from models.config import LLMConfig, load_config  # noqa: E402
from models.device import resolve_dtype  # noqa: E402
from models.storage import folder_bytes, write_section  # noqa: E402
from ragtune.app import quiet_libraries  # noqa: E402
from ragtune.benchmark import busy_note, loadavg, machine_rows, say, table  # noqa: E402

PUBMEDQA = ROOT.parent / "shared" / "datasets" / "pubmedqa" / "ori_pqal.json"  # ../shared beside the checkout
SMALL_LM = "smollm2-135m-instruct"
DEFAULT_LM = LLMConfig().model  # qwen2.5-coder-0.5b-instruct
METHODS = ("lora", "full")
FULL = {"models": [SMALL_LM, DEFAULT_LM], "steps": 5, "batch_size": 4, "max_seq_len": 256}
QUICK = {"models": [SMALL_LM], "steps": 2, "batch_size": 2, "max_seq_len": 128}
INSTRUCTION = "Answer the question about the abstract with yes, no or maybe."


# ---------------------------------------------------------------- training data


def fit_record(tokenizers: list[Any], record: dict[str, Any], max_seq_len: int) -> tuple[str, int] | None:
    """The longest prompt (CONTEXTS words kept from the start) whose chat-rendered example fits every tokenizer.

    Returns (prompt, context words kept), or None when even the bare question does not fit.
    """
    words = " ".join(record["CONTEXTS"]).split()
    answer = record["final_decision"]

    def prompt(n: int) -> str:
        context = " ".join(words[:n]) + (" ..." if n < len(words) else "")
        return f"{INSTRUCTION}\n\nAbstract: {context}\n\nQuestion: {record['QUESTION']}"

    def fits(n: int) -> bool:
        messages = [{"role": "user", "content": prompt(n)}, {"role": "assistant", "content": answer}]
        for tokenizer in tokenizers:
            ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
            if len(ids) > max_seq_len:
                return False
        return True

    if fits(len(words)):
        return prompt(len(words)), len(words)
    if not fits(0):
        return None
    low, high = 0, len(words)  # fits(low), not fits(high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return prompt(low), low


def build_data(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """Write the prompt/completion JSONL of PubMedQA's non-test ids to `path`; facts for the report."""
    from transformers import AutoTokenizer

    from models.loading import lm_folder

    records = json.loads(args.pubmedqa.read_text(encoding="utf-8"))
    test_ids = set(json.loads(args.pubmedqa.with_name("test_ground_truth.json").read_text(encoding="utf-8")))
    ids = [pmid for pmid in records if pmid not in test_ids]
    tokenizers = [
        AutoTokenizer.from_pretrained(lm_folder(model, progress=False), local_files_only=True) for model in args.models
    ]
    started = time.perf_counter()
    lines, dropped, cut, lengths = [], 0, 0, {model: [] for model in args.models}
    for pmid in ids:
        fitted = fit_record(tokenizers, records[pmid], args.max_seq_len)
        if fitted is None:
            dropped += 1
            continue
        prompt, kept = fitted
        cut += kept < len(" ".join(records[pmid]["CONTEXTS"]).split())
        completion = records[pmid]["final_decision"]
        lines.append(json.dumps({"id": pmid, "prompt": prompt, "completion": completion}, ensure_ascii=False))
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
        for model, tokenizer in zip(args.models, tokenizers):
            ids_ = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
            lengths[model].append(len(ids_))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    mean = {model: sum(values) / max(len(values), 1) for model, values in lengths.items()}
    say(
        f"[data] {len(lines)} of {len(ids)} non-test PubMedQA ids -> {path} ({cut} abstracts cut to fit, "
        f"{dropped} dropped) in {time.perf_counter() - started:.1f}s; mean tokens per example: "
        + ", ".join(f"{model} {value:.0f}" for model, value in mean.items())
    )
    return {"examples": len(lines), "ids": len(ids), "cut": cut, "dropped": dropped, "mean_tokens": mean}


# ---------------------------------------------------------------- one combination (child process)


def slug(model: str) -> str:
    """A preset name as is; a model folder or file as its last part, for adapter and file names."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model).name).strip(".-") or "model"


def folder_mb(folder: Path) -> float:
    return folder_bytes(folder) / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def overrides_for(args: argparse.Namespace, model: str, method: str) -> list[str]:
    ours = [
        f"llm.model={model}",
        f"llm.device={args.device}",
        f"finetune.method={method}",
        f"finetune.max_steps={args.steps}",
        f"finetune.batch_size={args.batch_size}",
        f"finetune.max_seq_len={args.max_seq_len}",
        "finetune.grad_accum=1",
        # No held-out split: train() would run an eval pass inside its timed loop at the last step.
        "finetune.eval_fraction=0",
    ]
    return ours + args.overrides


def measure_one(args: argparse.Namespace) -> dict[str, Any]:
    from finetune.adapters import apply_adapter, merge_adapter
    from finetune.train import train
    from models.loading import load_lm

    model, method = args.one
    config = load_config(None, overrides_for(args, model, method))
    cuda = args.device == "cuda"
    dtype = torch.float32 if method == "full" else resolve_dtype(config.llm.dtype, args.device)
    name = f"bench-{slug(model)}-{method}-{args.device}"
    result = train(config, args.data, name, progress=False)
    out: dict[str, Any] = {
        "dtype": str(dtype).removeprefix("torch."),
        "steps": result.steps,
        "seconds": result.seconds,
        "tokens_per_s": result.tokens_per_s,
        "train_peak_rss_mb": result.peak_rss_mb,
        "trainable_params": result.trainable_params,
        "total_params": result.total_params,
        "losses": result.losses,
        "disk_mb": folder_mb(result.path),
        "files": sorted(p.name for p in result.path.iterdir()),
    }
    if cuda:
        out["train_peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    say(
        f"[{name}] {result.steps} steps in {result.seconds:.1f}s, {result.tokens_per_s:.0f} tokens/s, "
        f"loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}, peak RSS {result.peak_rss_mb:.0f} MiB, "
        f"{out['disk_mb']:.1f} MiB on disk"
    )
    adapter = result.path
    del result
    gc.collect()
    if method == "lora":
        # As a user would: a fresh base model, the adapter applied (verified against its manifest), merged.
        started = time.perf_counter()
        lm = load_lm(config.llm, progress=False)
        loaded = time.perf_counter()
        peft_model = apply_adapter(lm.model, lm.path, name)
        applied = time.perf_counter()
        merged = merge_adapter(peft_model)
        if cuda:
            torch.cuda.synchronize()
        done = time.perf_counter()
        out["merge"] = {"load_s": loaded - started, "apply_s": applied - loaded, "merge_s": done - applied}
        say(f"[{name}] load {loaded - started:.2f}s + apply {applied - loaded:.2f}s + merge {done - applied:.2f}s")
        del lm, peft_model, merged
        gc.collect()
    out["process_peak_rss_mb"] = peak_rss_mb()
    if cuda:
        out["process_peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    shutil.rmtree(adapter, ignore_errors=True)  # a full 0.5B model is ~2 GB; the temp home goes at the end anyway
    return out


def run_one(args: argparse.Namespace) -> int:
    """Child process: one (model, method) on one device; the figures (or the failure) go to --json-out."""
    quiet_libraries()
    try:
        out = measure_one(args)
        status = 0
    except MemoryError as exc:
        out = {"error": f"MemoryError (out of RAM){': ' + str(exc) if str(exc) else ''}"}
        status = 1
    except Exception as exc:  # reported as a failed row by the parent, which goes on with the others
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        out = {"error": f"{type(exc).__name__}: {first}"}
        traceback.print_exc()
        status = 1
    out["pid_peak_rss_mb"] = peak_rss_mb()
    args.json_out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return status


# ---------------------------------------------------------------- the parent


def describe_exit(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        likely = " (likely the kernel's out-of-memory killer)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{likely}"
    return f"exited with code {code} without a result"


def spawn(args: argparse.Namespace, model: str, method: str, device: str, data: Path, work: Path) -> dict[str, Any]:
    """Run one combination in a fresh interpreter; its figures, or {"error": reason}."""
    json_out = work / f"{slug(model)}-{method}-{device}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--one", model, method, "--device", device]
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


def mib(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def result_row(model: str, method: str, out: dict[str, Any], cuda: bool) -> tuple[str, ...]:
    if "error" in out or "skipped" in out:
        reason = out["skipped"] if "skipped" in out else out["error"]
        status = ("skipped: " if "skipped" in out else "**failed**: ") + reason.replace("|", "\\|")
        blanks = 10 + (1 if cuda else 0)
        return (f"`{model}`", method, status, *(["—"] * blanks))
    share = 100 * out["trainable_params"] / out["total_params"]
    losses = out["losses"]
    merge = out.get("merge")
    merge_text = (
        f"{sum(merge.values()):.2f} s ({merge['load_s']:.2f} + {merge['apply_s']:.2f} + {merge['merge_s']:.2f})"
        if merge
        else "— (no adapter)"
    )
    row = [
        f"`{model}`",
        method,
        f"ok, {out['dtype']}",
        f"{out['tokens_per_s']:,.0f}",
        f"{out['seconds'] / out['steps']:.2f}",
        mib(out["train_peak_rss_mb"]),
        mib(out["process_peak_rss_mb"]),
    ]
    if cuda:
        row.append(mib(out["train_peak_gpu_mb"]))
    row += [
        f"{out['trainable_params']:,}",
        f"{share:.3g}%",
        mib(out["disk_mb"]),
        f"{losses[0]:.3f} → {losses[-1]:.3f}",
        merge_text,
        f"{out['wall_s']:.0f}",
    ]
    return tuple(row)


def device_table(device: str, results: list[tuple[str, str, dict[str, Any]]]) -> str:
    cuda = device == "cuda"
    header = "model | method | result, training dtype | tokens/s | s/step | peak RAM training (MiB) "
    header += "| peak RAM process (MiB) | "
    header += "peak GPU memory training (MiB) | " if cuda else ""
    header += "trainable params | trainable share | on disk (MiB) | loss first → last "
    header += "| merge: load + apply + merge | subprocess wall (s)"
    return table(header, [result_row(model, method, out, cuda) for model, method, out in results])


def report(
    args: argparse.Namespace,
    command: str,
    rows: list[tuple[str, str]],
    data: dict[str, Any],
    tables: dict[str, list[tuple[str, str, dict[str, Any]]]],
    total_s: float,
    load_end: str,
    busy: str,
) -> str:
    config = load_config(None, overrides_for(args, args.models[0], "lora"))
    ft = config.finetune
    tokens = ", ".join(f"`{model}` {value:.0f}" for model, value in data["mean_tokens"].items())
    targets = ", ".join(ft.lora.target_modules) if ft.lora.target_modules else "the attention projections"
    parts = [
        "## Fine-tuning: LoRA vs full",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {total_s / 60:.1f} min with:\n\n"
        f"```\n{command}\n```"
        + ("\n\nQuick mode: small sizes, a smoke test, not representative figures." if args.quick else ""),
        "### Machine\n\n" + table("item | value", rows),
        "### Setup\n\n"
        f"Training data: {data['examples']} prompt/completion examples from the {data['ids']} non-test PubMedQA "
        "ids (ids not in `test_ground_truth.json`): the prompt is an instruction, the record's CONTEXTS and its "
        "QUESTION, the completion its `final_decision` (yes / no / maybe); LONG_ANSWER is never used. Abstracts "
        f"are cut (at a word) so that every example fits finetune.max_seq_len={args.max_seq_len} tokens with "
        f"every benchmarked model's chat template ({data['cut']} cut, {data['dropped']} dropped); mean tokens per "
        f"example: {tokens}. The same file, seed ({ft.seed}) and so the same batches for every row: "
        f"{args.steps} optimizer steps of batch {args.batch_size} (grad_accum 1), lr {ft.lr} ({ft.schedule}), "
        f"LoRA r={ft.lora.r}, alpha={ft.lora.alpha}, dropout {ft.lora.dropout} on {targets}, eval_fraction=0 (train() "
        "would otherwise run an eval pass inside its timed loop at the last step). Each (model, method) ran in "
        "its own subprocess, one after another, through `finetune.train.train`; the adapters were written to a "
        "temporary RAGTUNE_HOME.",
        "Columns: **tokens/s** = non-padding tokens of the training batches ÷ training-loop seconds (TrainResult; "
        "the loop excludes model loading and saving, and its first step includes warm-up). **s/step** = those "
        "seconds ÷ steps. **peak RAM training** = the subprocess's ru_maxrss when training ended (load + train), "
        "**peak RAM process** = its ru_maxrss at exit (also saving and, for LoRA, the merge, which loads the base "
        "model again). **trainable share** = trainable ÷ all parameters of the trained model (with the "
        "LoRA weights). **on disk** = sum of the files in the adapter folder (for full fine-tuning: the whole "
        "model, its tokenizer and the manifest). **loss** = training loss of the first and last step (one batch "
        f"each, so noisy; lr {ft.lr} is the config default for both methods and high for full fine-tuning: this "
        "is a cost comparison, not a quality one). **merge** = `load_lm` of the base + `apply_adapter` + "
        "`merge_adapter`, seconds. **subprocess wall** = the whole subprocess (interpreter start, data "
        "tokenisation, load, train, save, merge). dtype: train() trains full fine-tuning in float32 and LoRA in "
        "the resolved llm.dtype (auto: bfloat16 where the CPU computes it natively).",
    ]
    for device, results in tables.items():
        parts.append(f"### Device: {device}\n\n" + device_table(device, results))
    if "cuda" not in tables:
        reason = "--cpu-only given" if args.cpu_only else "torch sees no CUDA GPU"
        parts.append(f"### Device: cuda\n\nNot measured: {reason} (no GPU on this machine).")
    load_start = dict(rows)["load average (1, 5, 15 min) at start"]
    parts.append(
        f"Load average (1, 5, 15 min) at start {load_start}, at end {load_end}, on {os.cpu_count()} logical "
        "cores: a load near or above the core count means other processes competed for the CPU, so treat "
        "timings as upper bounds." + (f" **Warning: {busy}**" if busy else "")
    )
    return "\n\n".join(parts)


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


if __name__ == "__main__":
    sys.exit(main())
