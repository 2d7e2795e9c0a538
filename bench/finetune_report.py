"""The fine-tuning benchmark's BENCHMARKS.md section: setup, column meanings and one table per device."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from bench.common import table
from bench.finetune_one import overrides_for
from models.config import load_config


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
