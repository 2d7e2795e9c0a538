"""Training data of the fine-tuning benchmark: PubMedQA's non-test ids as prompt/completion JSONL that fits
finetune.max_seq_len with every benchmarked model's chat template."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench.common import say

INSTRUCTION = "Answer the question about the abstract with yes, no or maybe."


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
