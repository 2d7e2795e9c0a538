"""llama.cpp settings for prompt processing, side by side in one process: weight types, attention, batch sizes.

The packaged GGUF (Q4_K_M) is re-quantised here to other types with llama.cpp's own quantiser, then every
variant takes turns on the same prompts, so their speed ratios hold under the same load. Quality is measured
too, because re-quantising a 4-bit file loses precision: perplexity on the example documents, and top-1
agreement and KL divergence against the packaged file's next-token distribution. Finally, the reuse of the
KV cache of the prompt's fixed start (the system text) across questions: first token with it kept or cleared.
transformers bf16 on the same GGUF (dequantised, as llm.backend=transformers loads it) takes its turns beside
them: the prompt-processing speed every llama.cpp setting is held against.

    python -m bench.weights MODEL THREADS PROMPTS.json ROUNDS TYPE [TYPE ...]   (JSON on stdout)
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.engines.llamacpp import common_prefix, quantize, reference_llama

# Types llama.cpp's quantiser writes without an importance matrix (the IQ2/IQ3 types need one).
WEIGHT_TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q4_K_S", "Q4_0", "IQ4_NL", "F16", "BF16")
DECODE_TOKENS = 16  # greedy tokens decoded after each prompt
QUALITY_TOKENS = 512  # tokens of the example documents scored for perplexity
ENGINE_DEFAULT = "packaged Q4_K_M (engine default)"


def requantise(source: Path, target: Path, kind: str, threads: int) -> float:
    """llama.cpp's quantiser: `source` re-written as `kind` (e.g. Q8_0); seconds taken."""
    started = time.perf_counter()
    quantize(source, target, kind, threads)
    return time.perf_counter() - started


def variants(packaged: Path, folder: Path, kinds: list[str], threads: int) -> list[dict[str, Any]]:
    """(label, file, flash attention, micro-batch) for each setting measured; the first is the reference."""
    rows = [
        {"label": "packaged Q4_K_M, flash attention off", "path": packaged, "flash": False, "ubatch": 512},
        {"label": ENGINE_DEFAULT, "path": packaged, "flash": True, "ubatch": 512},
        {"label": "packaged Q4_K_M, micro-batch 256", "path": packaged, "flash": True, "ubatch": 256},
        {"label": "packaged Q4_K_M, micro-batch 1024", "path": packaged, "flash": True, "ubatch": 1024},
    ]
    for kind in kinds:
        target = folder / f"{kind}.gguf"
        seconds = requantise(packaged, target, kind, threads)
        rows.append(
            {"label": f"re-quantised {kind}", "path": target, "flash": True, "ubatch": 512, "quantise_s": seconds}
        )
    return rows


def load(row: dict[str, Any], threads: int, logits_all: bool = False) -> Any:
    return reference_llama(
        row["path"],
        n_ctx=2048,
        threads=threads,
        n_batch=max(512, row["ubatch"]),
        n_ubatch=row["ubatch"],
        flash_attn=row["flash"],
        logits_all=logits_all,
    )


def timed(llama: Any, ids: list[int], keep_cache: bool = False) -> tuple[float, float]:
    """Seconds to the first token, and decode tokens/s, of one prompt, greedy; the KV cache cleared first unless
    `keep_cache` (then only what differs from the cached prompt is evaluated, as the engine does)."""
    if not keep_cache:
        llama.reset()
    started = time.perf_counter()
    llama.n_tokens = min(common_prefix(llama.eval_tokens, ids), len(ids) - 1)
    llama.eval(ids[llama.n_tokens :])
    first = llama.sample(temp=0.0)
    prefill = time.perf_counter() - started
    started = time.perf_counter()
    token = first
    for _ in range(DECODE_TOKENS):
        llama.eval([token])
        token = llama.sample(temp=0.0)
    return prefill, DECODE_TOKENS / (time.perf_counter() - started)


class TransformersReference:
    """transformers bf16 on the same GGUF dequantised (llm.backend=transformers's weights): the reference row."""

    label = "transformers bf16 (the same GGUF dequantised; reference)"

    def __init__(self, model: str, threads: int) -> None:
        from models.config import LLMConfig
        from models.loading import load_lm

        config = LLMConfig(model=model, backend="transformers", device="cpu", dtype="bfloat16", threads=threads)
        self.model = load_lm(config, progress=False).model

    def timed(self, ids: list[int]) -> tuple[float, float]:
        """As `timed` for llama.cpp: seconds to the first greedy token, then decode tokens/s over the KV cache."""
        import torch

        with torch.inference_mode():
            started = time.perf_counter()
            out = self.model(input_ids=torch.tensor([ids]), use_cache=True, logits_to_keep=1)
            token = out.logits[0, -1].argmax()
            prefill = time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(DECODE_TOKENS):
                out = self.model(input_ids=token.view(1, 1), past_key_values=out.past_key_values, use_cache=True)
                token = out.logits[0, -1].argmax()
        return prefill, DECODE_TOKENS / (time.perf_counter() - started)

    def close(self) -> None:
        del self.model


def speed(rows: list[dict[str, Any]], prompts: dict[str, list[int]], threads: int, rounds: int) -> None:
    """Each variant in turn on every prompt, `rounds` times; medians and per-turn ratios to the first variant."""
    models = [
        TransformersReference(row["model"], threads) if row.get("reference") else load(row, threads) for row in rows
    ]
    turns: list[list[dict[str, list[float]]]] = [[] for _ in rows]
    for _ in range(rounds):
        for engine, record in zip(models, turns):
            figures: dict[str, list[float]] = {"rag_prefill": [], "rag_decode": []}
            for name, ids in prompts.items():
                seconds, decode = engine.timed(ids) if isinstance(engine, TransformersReference) else timed(engine, ids)
                prefill = len(ids) / seconds
                kind = "long" if name == "long" else "rag"
                figures.setdefault(f"{kind}_prefill", []).append(prefill)
                figures.setdefault(f"{kind}_decode", []).append(decode)
            record.append({key: statistics.median(values) for key, values in figures.items()})
    for row, record in zip(rows, turns):
        for key in record[0]:
            row[key] = statistics.median(turn[key] for turn in record)
            row[key + "_ratio"] = statistics.median(t[key] / r[key] for t, r in zip(record, turns[0]))
    for engine in models:
        engine.close()
    reference = next(record for row, record in zip(rows, turns) if row.get("reference"))
    for row, record in zip(rows, turns):
        for key in ("rag_prefill", "long_prefill"):
            row[key + "_vs_reference"] = statistics.median(t[key] / r[key] for t, r in zip(record, reference))


def quality(rows: list[dict[str, Any]], ids: list[int], threads: int) -> None:
    """Perplexity of `ids` under each variant; top-1 agreement and KL(packaged || variant) per position."""
    reference = None
    for row in rows:
        if row.get("reference") or (row is not rows[0] and row["path"] == rows[0]["path"]):
            continue  # the same weights: attention and batch settings change speed, not the distribution
        llama = load(row, threads, logits_all=True)
        llama.eval(ids)
        logits = np.asarray(llama.scores[: len(ids) - 1], dtype=np.float64)
        llama.close()
        top = logits.max(axis=1, keepdims=True)
        logprobs = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
        row["perplexity"] = math.exp(-float(logprobs[np.arange(len(ids) - 1), ids[1:]].mean()))
        if reference is None:
            reference = logprobs
        row["top1_agreement"] = float((logprobs.argmax(1) == reference.argmax(1)).mean())
        row["kl"] = float((np.exp(reference) * (reference - logprobs)).sum(axis=1).mean())


def prefix_reuse(row: dict[str, Any], prompts: dict[str, list[int]], threads: int, rounds: int) -> dict[str, Any]:
    """First-token time of the RAG prompts asked one after another, the cache kept (as the engine does) or cleared."""
    llama = load(row, threads)
    rag = [ids for name, ids in prompts.items() if name != "long"]
    shared = min(common_prefix(rag[0], ids) for ids in rag[1:])
    kept, cleared = [], []
    for _ in range(rounds):
        for previous, ids in zip(rag, rag[1:]):
            for keep, into in ((True, kept), (False, cleared)):
                timed(llama, previous)  # the previous question's prompt is in the cache
                into.append(timed(llama, ids, keep_cache=keep)[0])
    llama.close()
    return {"shared_tokens": shared, "kept_s": statistics.median(kept), "cleared_s": statistics.median(cleared)}


def measure(model: str, threads: int, prompts_file: Path, rounds: int, kinds: list[str]) -> dict[str, Any]:
    from models.engines.llamacpp import LlamaCppLM
    from models.gguf import gguf_file
    from models.loading import lm_folder

    packaged = gguf_file(model)
    vocab = reference_llama(packaged, vocab_only=True)  # the tokenizer and chat template, no weights
    template = LlamaCppLM(vocab, model, packaged, 4096).generator()
    prompts = {p["id"]: template.encode_chat(p["messages"]) for p in json.loads(prompts_file.read_text())}
    with tempfile.TemporaryDirectory(prefix="ragtune-weights-") as folder:
        rows = variants(packaged, Path(folder), kinds, threads)
        rows.append({"label": TransformersReference.label, "reference": True, "model": model, "path": lm_folder(model)})
        speed(rows, prompts, threads, rounds)
        quality(rows, prompts["long"][:QUALITY_TOKENS], threads)
        reuse = prefix_reuse(rows[1], prompts, threads, rounds)
    for row in rows:
        row["path"] = row["path"].name
    lengths = {name: len(ids) for name, ids in prompts.items()}
    return {"model": model, "threads": threads, "rounds": rounds, "rows": rows, "reuse": reuse, "lengths": lengths}


def render(result: dict[str, Any]) -> str:
    """The section's text: one row per setting, ratios to the first (llama-cpp-python's defaults)."""
    rows, reuse, lengths = result["rows"], result["reuse"], result["lengths"]
    rag = sorted(n for name, n in lengths.items() if name != "long")
    lines = [
        "| setting | RAG prompts: prompt tokens/s (ratio) | long prompt: prompt tokens/s (ratio) | decode tokens/s "
        "(ratio) | perplexity | top-1 agreement | KL | file |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "perplexity" in row:
            quality = f"{row['perplexity']:.2f} | {row['top1_agreement']:.3f} | {row['kl']:.4f}"
        else:
            quality = "– | – | –" if row.get("reference") else "= | = | ="
        made = f" (re-quantised in {row['quantise_s']:.0f} s)" if "quantise_s" in row else ""
        lines.append(
            f"| {row['label']} | {row['rag_prefill']:.0f} ({row['rag_prefill_ratio']:.2f}×) | "
            f"{row['long_prefill']:.0f} ({row['long_prefill_ratio']:.2f}×) | {row['rag_decode']:.1f} "
            f"({row['rag_decode_ratio']:.2f}×) | {quality} | {row['path']}{made} |"
        )
    kept, cleared = reuse["kept_s"], reuse["cleared_s"]
    against = ""
    engine = next(row for row in rows if row["label"] == ENGINE_DEFAULT)
    rivals = [row for row in rows if not row.get("reference")]
    for key, what in (("rag_prefill", "RAG prompts"), ("long_prefill", "long prompt")):
        best = max(rivals, key=lambda row: row[key + "_vs_reference"])
        against += (
            f"\n- {what}: prompt tokens/s ÷ transformers bf16's, taking turns: engine default "
            f"{engine[key + '_vs_reference']:.2f}×, fastest llama.cpp setting ({best['label']}) "
            f"{best[key + '_vs_reference']:.2f}× (target: no slower, ≥ 1×)"
        )
    return (
        f"### 6. llama.cpp settings side by side\n\n`{result['model']}`, {result['threads']} threads, greedy. Every "
        f"setting loaded in one process and taking turns, {result['rounds']} rounds, on {len(rag)} RAG prompts built "
        f"as `ask` builds them ({rag[0]}-{rag[-1]} tokens) and one {lengths['long']}-token prompt, the KV cache "
        f"cleared before each; decode: {DECODE_TOKENS} greedy tokens after each RAG prompt. Ratios are medians of "
        "per-round ratios to the first row (llama-cpp-python's defaults). Perplexity, top-1 agreement and KL "
        f"(packaged ‖ setting, nats per token) over the first {QUALITY_TOKENS} tokens of the long prompt; '=' where "
        f"the weights are the packaged file's, '–' for transformers (not measured). Load: {result['load']}.\n\n"
        + "\n".join(lines)
        + f"\n\n- KV cache of the prompt's fixed start: consecutive RAG prompts share their first "
        f"{reuse['shared_tokens']} tokens (chat template and system text). First token p50 with the previous "
        f"question's cache kept (the engine's behaviour) {kept:.2f} s, cleared {cleared:.2f} s: "
        f"{kept / cleared:.2f}×." + against
    )


def main() -> int:
    model, threads, prompts, rounds, *kinds = sys.argv[1:]
    from ragtune.compose import quiet_libraries

    quiet_libraries()
    print(json.dumps(measure(model, int(threads), Path(prompts), int(rounds), kinds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
