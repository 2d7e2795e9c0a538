"""Generation engines side by side on the same prompts: transformers (bf16, fp32), llamacpp, bare llama_cpp.

Each engine runs in its own child process (`python -m bench.generation ENGINE ...`) so its peak
RSS is its own; the parent (scripts/bench_rag.py --gen-only) builds the prompts once and compares. The
"+ LoRA" engines answer through an adapter (PEFT on transformers, its GGUF export on llamacpp) that the
parent passes with --adapter.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# engine label -> llm.* overrides (bare: llama_cpp.Llama driven directly, the ceiling for llamacpp)
ENGINES: dict[str, dict[str, str]] = {
    "transformers bf16": {"backend": "transformers", "dtype": "bfloat16"},
    "transformers bf16 + LoRA": {"backend": "transformers", "dtype": "bfloat16"},
    "transformers fp32": {"backend": "transformers", "dtype": "float32"},
    "llamacpp": {"backend": "llamacpp"},
    "llamacpp + LoRA": {"backend": "llamacpp"},
    "llamacpp prompt_lookup": {"backend": "llamacpp", "speculative": "prompt_lookup"},
    "bare llama_cpp.Llama": {"backend": "bare"},
}
WITH_LORA = " + LoRA"


WARM_UP = [{"role": "user", "content": "Say hello."}]


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_engine(
    label: str, model: str, threads: int, prompts: list[dict[str, Any]], max_new: int, adapter: Path | None = None
) -> dict[str, Any]:
    """Load one engine (with `adapter` applied for a "+ LoRA" label), warm it up once, then answer every prompt
    greedily; figures per prompt."""
    from models.config import LLMConfig

    settings = dict(ENGINES[label])
    bare = settings.pop("backend") == "bare"
    config = LLMConfig(
        model=model, threads=threads, max_new_tokens=max_new, backend="llamacpp" if bare else ENGINES[label]["backend"]
    )
    config = LLMConfig(**{**config.__dict__, **settings})
    started = time.perf_counter()
    if label.endswith(WITH_LORA) and adapter is None:
        raise ValueError(f"engine {label!r} answers through an adapter: pass --adapter FOLDER")
    run = _bare(config) if bare else _ours(config, adapter if label.endswith(WITH_LORA) else None)
    load_s = time.perf_counter() - started
    run(WARM_UP, 4)  # warm-up, not measured; not a benchmark prompt, whose tokens llama.cpp would keep cached
    results = []
    for prompt in prompts:
        figures = run(prompt["messages"], max_new)
        results.append({"id": prompt["id"], **figures})
        print(f"[gen:{label}] {prompt['id']}: {json.dumps(figures)}", file=sys.stderr, flush=True)
    return {"label": label, "load_s": load_s, "peak_rss_mb": peak_rss_mb(), "prompts": results}


def alternate(model: str, threads: int, prompts: list[dict[str, Any]], max_new: int) -> dict[str, Any]:
    """The llamacpp engine and bare llama_cpp.Llama in one process, taking turns on each prompt (first in turn
    alternates): their decode speeds compared under the same load, which drifts between separate runs."""
    from models.config import LLMConfig

    config = LLMConfig(model=model, backend="llamacpp", threads=threads, max_new_tokens=max_new)
    runs = {"llamacpp": _ours(config), "bare": _bare(config)}
    for run in runs.values():
        run(WARM_UP, 4)
    decode: dict[str, list[float]] = {name: [] for name in runs}
    for i, prompt in enumerate(prompts):
        for name in sorted(runs, reverse=i % 2 == 1):
            figure = _decode(runs[name](prompt["messages"], max_new))
            if figure is not None:
                decode[name].append(figure)
    return {"label": "alternating", "decode": decode}


def _ours(config: Any, adapter: Path | None = None) -> Any:
    from models.generate import AdapterRef, SamplingParams, load_language_model

    lm = load_language_model(config, progress=False)
    if adapter is not None:
        lm.load_adapter(AdapterRef(adapter.name, adapter))
    generator = lm.generator(adapter.name if adapter is not None else None)

    def run(messages: list[dict[str, str]], max_new: int) -> dict[str, Any]:
        stream = generator.stream(messages, SamplingParams(max_new_tokens=max_new))
        text = "".join(stream)
        usage = stream.usage
        return {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "first_token_s": usage.first_token_s,
            "total_s": usage.total_s,
            "text": text[:80],
        }

    return run


def _bare(config: Any) -> Any:
    """llama_cpp.Llama's own token loop on the same prompt tokens: no stream logic, no per-token decoding."""
    from models.engines.llamacpp import chat_template, end_of_generation, reference_llama
    from models.gguf import gguf_file

    # Flash attention on, as llama.cpp's own tools run on the CPU, and as the engine does.
    llama = reference_llama(gguf_file(config.model), config.context_window + config.max_new_tokens, config.threads)
    template = chat_template(llama, config.model)
    ends = end_of_generation(llama)

    def run(messages: list[dict[str, str]], max_new: int) -> dict[str, Any]:
        ids = llama.tokenize(template(messages=messages).prompt.encode(), add_bos=False, special=True)
        started, first, out = time.perf_counter(), None, []
        for token in llama.generate(ids, temp=0.0, top_k=0, min_p=0.0, repeat_penalty=1.0):
            first = first if first is not None else time.perf_counter() - started
            if ends(token) or len(out) >= max_new:
                break
            out.append(token)
        total = time.perf_counter() - started
        text = llama.detokenize(out).decode("utf-8", "replace")
        return {
            "prompt_tokens": len(ids),
            "completion_tokens": len(out),
            "first_token_s": first,
            "total_s": total,
            "text": text[:80],
        }

    return run


def build_prompts(config: Any, embedder: Any, questions: list[dict[str, Any]], docs: Path) -> list[dict[str, Any]]:
    """The messages `ask` builds for each question (retrieval over `docs`), and one ~1,000-token prompt."""
    from transformers import AutoTokenizer

    from models.loading import lm_folder
    from models.paths import index_dir
    from rag.prompt import Passage, build_messages, fit_passages
    from rag.retrieve import build_retriever

    tokenizer = AutoTokenizer.from_pretrained(lm_folder(config.llm.model, progress=False))

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    retriever = build_retriever(index_dir(config), config, embedder)
    prompts = []
    for item in questions:
        sources = retriever.retrieve(item["question"]).sources
        passages = [Passage(s.number, Path(s.path).name, s.text) for s in sources]
        passages = fit_passages(passages, config.rag.max_context_tokens, count)
        prompts.append({"id": item["id"], "messages": build_messages(item["question"], passages)})
    text, files = "", sorted(p for p in docs.rglob("*") if p.suffix in (".txt", ".md"))
    while count(text) < 950:  # the example documents, repeated as needed, cut to about 950 tokens
        text += "".join(p.read_text(encoding="utf-8") for p in files)
    text = tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:950])
    question = "Summarise the library's rules in three sentences."
    prompts.append({"id": "long", "messages": build_messages(question, [Passage(1, "all-docs", text)])})
    return prompts


OPENMP_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def run_child(
    label: str,
    model: str,
    threads: int,
    prompts: Path,
    max_new: int,
    timeout: float,
    adapter: Path | None = None,
    openmp_wait: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One engine in a fresh process; its JSON result (or the failure, named). `openmp_wait`: the OpenMP wait
    variables the child starts with instead of this process's (libgomp reads them once, when it loads)."""
    command = [sys.executable, "-m", "bench.generation", label, model, str(threads), str(prompts), str(max_new)]
    if adapter is not None and label.endswith(WITH_LORA):
        command += ["--adapter", str(adapter)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    if openmp_wait is not None:
        env = {key: value for key, value in env.items() if key not in OPENMP_WAIT_VARIABLES} | openmp_wait
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=timeout, env=env)  # stderr: live
    if done.returncode != 0:
        return {"label": label, "error": [f"exit status {done.returncode} (its error is printed above)"]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _decode(p: dict[str, Any]) -> float | None:
    tokens, first, total = p["completion_tokens"], p["first_token_s"], p["total_s"]
    return (tokens - 1) / (total - first) if first is not None and tokens > 1 and total > first else None


def summarise(run: dict[str, Any]) -> dict[str, float]:
    """Medians over the RAG prompts, and the long prompt's own figures."""
    from bench.common import pct

    rag = [p for p in run["prompts"] if p["id"] != "long"]
    long = next(p for p in run["prompts"] if p["id"] == "long")
    decode = [d for d in map(_decode, rag) if d is not None]
    return {
        "rag_prefill": pct([p["prompt_tokens"] / p["first_token_s"] for p in rag], 50),
        "rag_first": pct([p["first_token_s"] for p in rag], 50),
        "rag_decode": pct(decode, 50),
        "rag_total": pct([p["total_s"] for p in rag], 50),
        "rag_tokens": pct([p["completion_tokens"] for p in rag], 50),
        "long_prefill": long["prompt_tokens"] / long["first_token_s"],
        "long_first": long["first_token_s"],
        "long_decode": _decode(long) or float("nan"),
        "long_total": long["total_s"],
        "long_prompt_tokens": long["prompt_tokens"],
        "rss": run["peak_rss_mb"],
        "load": run["load_s"],
    }


ROWS = [
    ("RAG prompts: prompt tokens/s p50 (prompt tokens ÷ first-token time)", "rag_prefill", "{:.0f}"),
    ("RAG prompts: first token p50", "rag_first", "{:.2f} s"),
    ("RAG prompts: decode tokens/s p50", "rag_decode", "{:.1f}"),
    ("RAG prompts: answer total p50", "rag_total", "{:.2f} s"),
    ("RAG prompts: completion tokens p50", "rag_tokens", "{:.0f}"),
    ("long prompt: prompt tokens/s", "long_prefill", "{:.0f}"),
    ("long prompt: first token", "long_first", "{:.2f} s"),
    ("long prompt: decode tokens/s", "long_decode", "{:.1f}"),
    ("long prompt: total", "long_total", "{:.2f} s"),
    ("peak RSS of the engine's process", "rss", "{:.0f} MB"),
    ("load time", "load", "{:.1f} s"),
]


def report(runs: list[dict[str, Any]], reference: str) -> tuple[str, list[str]]:
    """The side-by-side table and the ratio lines against the targets."""
    from bench.common import pct, table

    done = [r for r in runs if "error" not in r and r["label"] != "alternating"]
    figures = {r["label"]: summarise(r) for r in done}
    rows = [(name, *(fmt.format(figures[r["label"]][key]) for r in done)) for name, key, fmt in ROWS]
    text = table("metric | " + " | ".join(r["label"] for r in done), rows)
    lines = [f"{r['label']}: failed: {' '.join(r['error'])}" for r in runs if "error" in r]
    ours, bare, ref = figures.get("llamacpp"), figures.get("bare llama_cpp.Llama"), figures.get(reference)
    if ours and bare:
        for key, what in (("rag_decode", "RAG prompts"), ("long_decode", "long prompt")):
            ratio = ours[key] / bare[key]
            lines.append(f"llamacpp decode ÷ bare llama_cpp decode ({what}): {ratio:.2f}× (target ≥ 0.9×)")
    if ours and ref:
        ratio = ours["rag_total"] / ref["rag_total"]
        lines.append(f"llamacpp RAG answer total p50 ÷ {reference}: {ratio:.2f}× (target ≤ 0.6×)")
    turns = next((r for r in runs if r["label"] == "alternating" and "error" not in r), None)
    if turns is not None:
        ours_p50, bare_p50 = pct(turns["decode"]["llamacpp"], 50), pct(turns["decode"]["bare"], 50)
        lines.append(
            f"taking turns in one process on the same prompts: llamacpp decode p50 {ours_p50:.1f} tokens/s, "
            f"bare {bare_p50:.1f}: {ours_p50 / bare_p50:.2f}× (target ≥ 0.9×)"
        )
    lookup = figures.get("llamacpp prompt_lookup")
    if ours and lookup:
        ratio = lookup["rag_total"] / ours["rag_total"]
        lines.append(f"prompt_lookup on ÷ off, RAG answer total p50: {ratio:.2f}× (below 1 helps)")
    for engine in ("llamacpp", reference):
        plain, lora = figures.get(engine), figures.get(engine + WITH_LORA)
        if plain and lora:
            lines.append(
                f"{engine} with a LoRA ÷ without: prompt tokens/s {lora['rag_prefill'] / plain['rag_prefill']:.2f}×, "
                f"decode tokens/s {lora['rag_decode'] / plain['rag_decode']:.2f}×, "
                f"RAG answer total p50 {lora['rag_total'] / plain['rag_total']:.2f}× (RAG prompts)"
            )
    return text, lines


def main() -> int:
    parser = argparse.ArgumentParser(description="one engine of the generation benchmark (a child process)")
    parser.add_argument("label", choices=[*ENGINES, "alternating"])
    parser.add_argument("model")
    parser.add_argument("threads", type=int)
    parser.add_argument("prompts", type=Path)
    parser.add_argument("max_new", type=int)
    parser.add_argument("--adapter", type=Path, help="adapter folder (PEFT files and their GGUF export) for + LoRA")
    args = parser.parse_args()
    from ragtune.compose import quiet_libraries

    quiet_libraries()
    prompts = json.loads(args.prompts.read_text(encoding="utf-8"))
    measure = alternate if args.label == "alternating" else None
    if measure is not None:
        print(json.dumps(measure(args.model, args.threads, prompts, args.max_new)))
        return 0
    print(json.dumps(run_engine(args.label, args.model, args.threads, prompts, args.max_new, args.adapter)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
