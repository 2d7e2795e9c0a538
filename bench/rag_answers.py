"""Section 4 of the RAG benchmark: answer latency and answer check of the default LM in two dtypes."""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import pct, say, table
from models.answer import answer
from models.config import Config, load_config
from models.device import resolve_device, resolve_dtype
from models.embedding import Embedder
from models.generate import SamplingParams, collect, load_language_model
from rag.ingest import ingest
from ragtune.compose import build_answerer

ROOT = Path(__file__).resolve().parents[1]


def answer_run(config: Config, embedder: Embedder, questions: list[dict[str, Any]]) -> dict[str, Any]:
    """Load the LM once for `config`, answer every question; per-answer figures and the LM's dtype."""
    started = time.perf_counter()
    lm = load_language_model(config.llm, progress=False)
    answerer = build_answerer(config, embedder=embedder, generator=lm.generator(), progress=False)
    load_s = time.perf_counter() - started
    tag = f"{config.llm.dtype}->{lm.dtype}"
    say(f"[answers:{tag}] loaded {config.llm.model} in {load_s:.1f}s")
    warm = [{"role": "user", "content": "Say hello."}]
    collect(answerer.generator.stream(warm, SamplingParams(max_new_tokens=4)))  # warm-up, not measured
    run: dict[str, Any] = {"load_s": load_s, "device": lm.device, "dtype": lm.dtype, "correct": 0}
    for key in ("first", "lm_first", "total", "decode", "tokens"):
        run[key] = []
    for item in questions:
        reply = answer(answerer, item["question"])
        ok = any(a.lower() in reply.text.lower() for a in item["answers"])
        run["correct"] += ok
        run["total"].append(reply.timings["total_s"])
        if "first_token_s" in reply.timings:
            run["first"].append(reply.timings["first_token_s"])
        usage = reply.usage  # None when nothing was retrieved and the LM was not asked
        if usage is not None:
            run["tokens"].append(usage.completion_tokens)
            if usage.first_token_s is not None:
                run["lm_first"].append(usage.first_token_s)
                # Our own decode figure from raw usage fields, independent of Usage.tokens_per_s's definition.
                if usage.completion_tokens > 1 and usage.total_s > usage.first_token_s:
                    run["decode"].append((usage.completion_tokens - 1) / (usage.total_s - usage.first_token_s))
        tokens = usage.completion_tokens if usage else 0
        say(
            f"[answers:{tag}] {item['id']}: first token {reply.timings.get('first_token_s', float('nan')):.2f}s, "
            f"total {reply.timings['total_s']:.2f}s, {tokens} tokens, {'ok' if ok else 'miss'}: {reply.text[:80]!r}"
        )
    del answerer, lm  # free this LM before the next one is loaded
    gc.collect()
    return run


def bench_answers(args: argparse.Namespace, embedder: Embedder, overrides: list[str]) -> str:
    # The dtype comparison is transformers' (llamacpp runs the GGUF's own types; section 5 compares engines).
    config = load_config(None, ["index.name=examples", "llm.backend=transformers", *overrides])
    summary = ingest([ROOT / "examples" / "docs"], config, embedder, progress=False)
    say(f"[answers] indexed examples/docs: {summary.line()}")
    lines = (ROOT / "examples" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line) for line in lines if line.strip()][: args.answers]
    # The configured dtype (default auto) against the other of bfloat16 / float32, so the default is
    # backed by a measurement on this machine; the comparison's override comes last, so it wins.
    chosen = resolve_dtype(config.llm.dtype, resolve_device(config.llm.device, "llm.device"))
    other = "bfloat16" if chosen == torch.float32 else "float32"
    configs = [
        config,
        load_config(None, ["index.name=examples", "llm.backend=transformers", *overrides, f"llm.dtype={other}"]),
    ]
    runs = [answer_run(c, embedder, questions) for c in configs]

    def median(key: str, unit: str = "", digits: int = 2) -> tuple[str, ...]:
        return tuple(f"{pct(run[key], 50):.{digits}f}{unit}" for run in runs)

    rows = [
        ("first token p50 (from the question: embed + search + prompt + prefill)", *median("first", " s")),
        ("LM first token p50 (from the `generate` call: prefill + first step)", *median("lm_first", " s")),
        ("total p50", *median("total", " s")),
        (
            "decode tokens/s, median over answers: (completion tokens − 1) ÷ (LM total − LM first token)",
            *median("decode", digits=1),
        ),
        ("completion tokens p50", *median("tokens", digits=0)),
        ("answers containing an accepted string", *(f"{run['correct']}/{len(questions)}" for run in runs)),
        ("LM load time", *(f"{run['load_s']:.1f} s" for run in runs)),
    ]
    for name, *values in rows:
        say(f"[answers] {name}: {' vs '.join(values)}")
    names = [str(run["dtype"]).removeprefix("torch.") for run in runs]
    columns = [f"llm.dtype={c.llm.dtype} → {name}" for c, name in zip(configs, names)]
    return (
        f"### 4. Answer latency\n\n{len(questions)} questions of `examples/questions.jsonl`, default config "
        f"(`{config.llm.model}` on {runs[0]['device']}, greedy, max_new_tokens={config.llm.max_new_tokens}), "
        f"index built from `examples/docs`, once with the configured dtype ({config.llm.dtype}, resolved to "
        f"{names[0]} here) and once with llm.dtype={other}; each LM loaded once, then one short warm-up "
        "generation. Timings from the `rag` Answerer's events and the stream's `Usage` fields; first token counts "
        "from the question. Load times depend on order: the configured dtype loads first, and the second load "
        "may find the weights in the page cache. No target set.\n\n" + table("metric | " + " | ".join(columns), rows)
    )
