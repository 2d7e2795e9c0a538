"""Benchmark `ragtune serve` with serve.parallel=1 against serve.parallel=N on the llama.cpp engine: requests/s,
answer tokens/s and latency at a few client counts, for plain chat (`base`) and `rag` requests.

    python scripts/bench_serve_parallel.py [--parallel 4] [--clients 1 2 4] [--requests 4] [--max-tokens 64]

One process loads the default models once; two servers on 127.0.0.1 share that LM, one answering one request
at a time, one decoding up to N together (its own llama.cpp context). Each point sends the same questions
(examples/questions.jsonl, in order) from `clients` threads over plain HTTP, greedy; the two settings run
back to back at each point, so a change of the machine's load touches both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import busy_note, loadavg, machine_rows, pct, say, table
from models.config import load_config
from models.storage import write_section

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-" + "k" * 32


def load(url: str, mode: str, questions: list[str], clients: int, max_tokens: int) -> dict[str, float]:
    """Every question sent once from `clients` threads; requests/s, answer tokens/s and latency percentiles."""
    import httpx

    def one(question: str) -> tuple[float, int, int]:
        body = {"model": mode, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens}
        started = time.perf_counter()
        response = httpx.post(
            f"{url}/v1/chat/completions", json=body, timeout=600, headers={"Authorization": f"Bearer {KEY}"}
        )
        tokens = response.json()["usage"]["completion_tokens"] if response.status_code == 200 else 0
        return time.perf_counter() - started, response.status_code, tokens

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(one, questions))
    wall = time.perf_counter() - started
    times = [t for t, _, _ in results]
    ok = sum(code == 200 for _, code, _ in results)
    tokens = sum(n for _, _, n in results)
    return {
        "n": len(results),
        "ok": ok,
        "rps": ok / wall,
        "tps": tokens / wall,
        "p50": pct(times, 50),
        "p95": pct(times, 95),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parallel", type=int, default=4, help="serve.parallel compared with 1")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--requests", type=int, default=4, help="requests per point (at least the client count)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--modes", nargs="+", default=["base", "rag"])
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = parser.parse_args()

    from models.answer import text_of
    from models.generate import SamplingParams
    from rag.ingest import ingest
    from ragtune.compose import quiet_libraries
    from ragtune.serve.background import running
    from ragtune.serve.engine import Engine
    from ragtune.serve.routes import create_app

    quiet_libraries()
    note = busy_note()
    load_start, machine = loadavg(), machine_rows(("llama_cpp_python", "fastapi", "uvicorn"))
    home = Path(tempfile.mkdtemp(prefix="ragtune-bench-serve-parallel-"))
    os.environ["RAGTUNE_HOME"] = str(home)
    asked = [json.loads(line)["question"] for line in (ROOT / "examples" / "questions.jsonl").read_text().splitlines()]
    common = [f"serve.max_queue={max(args.clients) * 2}", f"llm.max_new_tokens={args.max_tokens}", *args.overrides]
    rows = []
    try:
        one = Engine(load_config(None, [*common, "serve.parallel=1"]))
        if one.lm.backend != "llamacpp":
            raise SystemExit(f"serve.parallel runs on llm.backend=llamacpp; this model runs on {one.lm.backend}")
        ingest([ROOT / "examples" / "docs"], one.config, one.embedder, progress=False)
        config = load_config(None, [*common, f"serve.parallel={args.parallel}"])
        many = Engine(config, embedder=one.embedder, lm=one.lm)
        kv = many._batch.kv_bytes_per_sequence()
        warm = SamplingParams(max_new_tokens=8)
        for engine in (one, many):
            "".join(text_of(engine.reply("rag", [{"role": "user", "content": asked[0]}], warm)))
        with running(create_app(one, KEY)) as url_one, running(create_app(many, KEY)) as url_many:
            for clients in args.clients:
                questions = [asked[i % len(asked)] for i in range(max(args.requests, clients))]
                for mode in args.modes:
                    for parallel, url in ((1, url_one), (args.parallel, url_many)):
                        say(f"serve.parallel={parallel}, {mode}, {clients} clients...")
                        r = load(url, mode, questions, clients, args.max_tokens)
                        rows.append(
                            (
                                mode,
                                str(clients),
                                str(parallel),
                                f"{r['ok']}/{r['n']}",
                                f"{r['rps']:.3f}",
                                f"{r['tps']:.1f}",
                                f"{r['p50']:.2f} s",
                                f"{r['p95']:.2f} s",
                            )
                        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    report = "\n\n".join(
        [
            "### Concurrent requests: serve.parallel (`scripts/bench_serve_parallel.py`)",
            f"Command: `{shlex.join(sys.orig_argv)}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Default "
            f"models on llama.cpp, greedy, max_tokens {args.max_tokens}; at each point max({args.requests}, clients) "
            "questions of examples/questions.jsonl, in order, sent by `clients` threads; serve.parallel=1 and "
            f"{args.parallel} back to back over the same loaded LM. KV cache per "
            f"sequence: {kv / 2**20:.0f} MiB (llm.context_window + llm.max_new_tokens tokens).",
            table("what | value", machine),
            table("model | clients | serve.parallel | answered (200) | requests/s | answer tokens/s | p50 | p95", rows),
            f"Load average (1, 5, 15 min) at start {load_start}, at end {loadavg()}."
            + (f" Note: {note}." if note else ""),
        ]
    )
    write_section(args.out, "bench_serve_parallel", report, title="# ragtune benchmarks")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
