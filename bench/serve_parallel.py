"""Benchmark `ragtune serve` with serve.parallel=1 against serve.parallel=N on the llama.cpp engine, and optionally
llama.cpp's own `llama-server --parallel 1` and `--parallel N` on the same GGUF: requests/s, answer tokens/s and
latency at a few client counts, for plain chat (`base`) and `rag` requests.

    python scripts/bench_serve_parallel.py [--parallel 4] [--clients 1 2 4 8] [--requests 4] [--max-tokens 64]
        [--modes base rag] [--llama-server PATH]     (PATH: printed by scripts/build_llama_server.sh)

One process loads the default models once; two servers on 127.0.0.1 share that LM, one answering one request
at a time, one decoding up to N together (its own llama.cpp context). With --llama-server, two llama-server
processes load the GGUF the engine loaded, with the same threads and per-sequence context (llm.context_window +
llm.max_new_tokens) and prompt reuse, one slot and N slots; they answer `base` only (llama-server has no
retrieval). Each point sends the same questions (examples/questions.jsonl, in order) from `clients` threads over
plain HTTP, greedy; every setting runs back to back at each point, so a change of the machine's load touches all
alike.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench.common import busy_note, loadavg, machine_rows, pct, say, table
from models.config import load_config
from models.storage import write_section

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-" + "k" * 32


def load(
    url: str, mode: str, questions: list[str], clients: int, max_tokens: int, counts_end: bool = False
) -> dict[str, float]:
    """Every question sent once from `clients` threads; requests/s, answer tokens/s and latency percentiles.

    `counts_end`: the server's usage.completion_tokens includes the end-of-generation token of an answer that
    stopped (llama-server's does; ragtune counts answer tokens only), so one is taken off such an answer.
    """
    import httpx

    def one(question: str) -> tuple[float, int, int]:
        # temperature 0 spelled out: llama-server samples at 0.8 unless told (ragtune's llm.temperature is 0).
        body = {
            "model": mode,
            "messages": [{"role": "user", "content": question}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        started = time.perf_counter()
        response = httpx.post(
            f"{url}/v1/chat/completions", json=body, timeout=600, headers={"Authorization": f"Bearer {KEY}"}
        )
        tokens = 0
        if response.status_code == 200:
            answer = response.json()
            tokens = answer["usage"]["completion_tokens"]
            if counts_end and answer["choices"][0]["finish_reason"] == "stop":
                tokens -= 1
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


def llama_server_command(
    binary: Path, gguf: Path, parallel: int, seq_tokens: int, threads: int, port: int
) -> list[str]:
    """llama-server over `gguf` set up as ragtune's llama.cpp engine is: `parallel` slots of `seq_tokens` each."""
    return [
        str(binary),
        *("-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "--parallel", str(parallel)),
        # llama-server splits -c among its slots (each its own KV cells, as ragtune's batched context has them).
        *("-c", str(seq_tokens * parallel), "--no-kv-unified", "-t", str(threads), "-tb", str(threads)),
        # Flash attention on and 512-token batches, as ragtune sets llama.cpp up.
        *("-fa", "on", "-b", "512", "-ub", "512"),
        # Prompts reused as ragtune reuses them: one slot keeps the previous request's common prefix (as
        # llama-cpp-python's context does), N slots evaluate every prompt whole (as ragtune's batched decoder
        # does); else a slot or the RAM prompt cache would skip the prompt of a question asked at an earlier point.
        *("--cache-ram", "0", *(() if parallel == 1 else ("--no-cache-prompt",)), "--no-webui"),
    ]


@contextmanager
def llama_server(command: list[str], log: Path, timeout: float = 300) -> Iterator[str]:
    """Run llama-server (`command`, its output to `log`) and yield its URL once /health answers; stop it after."""
    import httpx

    url = f"http://127.0.0.1:{command[command.index('--port') + 1]}"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace").splitlines()[-20:]
                raise SystemExit(f"llama-server did not start ({shlex.join(command)}):\n" + "\n".join(tail))
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:  # 503 while the model loads
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def row(model: str, clients: int, parallel: int, r: dict[str, float]) -> tuple[str, ...]:
    return (
        model,
        str(clients),
        str(parallel),
        f"{r['ok']}/{r['n']}",
        f"{r['rps']:.3f}",
        f"{r['tps']:.1f}",
        f"{r['p50']:.2f} s",
        f"{r['p95']:.2f} s",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parallel", type=int, default=4, help="serve.parallel compared with 1")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--requests", type=int, default=4, help="requests per point (at least the client count)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--modes", nargs="+", default=["base", "rag"])
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument(
        "--llama-server", type=Path, metavar="PATH", help="also measure this llama-server binary (base requests only)"
    )
    args = parser.parse_args()
    if args.llama_server is not None:
        if not os.access(args.llama_server, os.X_OK):
            parser.error(
                f"--llama-server {args.llama_server}: no executable there; build it: scripts/build_llama_server.sh"
            )
        if "base" not in args.modes:
            parser.error("--llama-server answers base requests only (it has no retrieval); add base to --modes")

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
    rows, reference = [], ""
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
        with ExitStack() as servers:
            ragtune = {1: servers.enter_context(running(create_app(one, KEY)))}
            ragtune[args.parallel] = servers.enter_context(running(create_app(many, KEY)))
            llamacpp: dict[int, str] = {}
            if args.llama_server is not None:
                # The engine's own GGUF, threads and per-sequence context (llm.context_window + llm.max_new_tokens).
                llama = one.lm.llama
                for parallel in (1, args.parallel):
                    command = llama_server_command(
                        args.llama_server,
                        one.lm.path,
                        parallel,
                        llama.n_ctx(),
                        llama.context_params.n_threads,
                        free_port(),
                    )
                    llamacpp[parallel] = servers.enter_context(llama_server(command, home / f"llama-{parallel}.log"))
                    load(llamacpp[parallel], "base", asked[:1], 1, 8)  # warm, as the engines were
                reference = shlex.join(command)
            # (model, parallel, url) in the table's order: llama-server's rows after ragtune's base rows.
            settings: list[tuple[str, int, str]] = []
            for mode in args.modes:
                settings += [(mode, parallel, url) for parallel, url in ragtune.items()]
                if mode == "base":
                    settings += [("base (llama-server)", parallel, url) for parallel, url in llamacpp.items()]
            for clients in args.clients:
                questions = [asked[i % len(asked)] for i in range(max(args.requests, clients))]
                for model, parallel, url in settings:
                    say(f"{model}, parallel {parallel}, {clients} clients...")
                    mode = model.split()[0]
                    r = load(url, mode, questions, clients, args.max_tokens, counts_end=model != mode)
                    rows.append(row(model, clients, parallel, r))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    compared = f"serve.parallel=1 and {args.parallel} back to back over the same loaded LM"
    if reference:
        compared += (
            f", then llama.cpp's own llama-server (built by scripts/build_llama_server.sh from the llama.cpp in the "
            f"installed llama-cpp-python's sdist) with --parallel 1 and {args.parallel} on the same GGUF, threads and "
            "per-sequence context and prompt reuse (with one slot the previous request's common prefix, with "
            f"{args.parallel} none), for base requests only (llama-server has no retrieval): `{reference}`"
        )
    report = "\n\n".join(
        [
            "### Concurrent requests: serve.parallel (`scripts/bench_serve_parallel.py`)",
            f"Command: `{shlex.join(sys.orig_argv)}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Default "
            f"models on llama.cpp, greedy, max_tokens {args.max_tokens}; at each point max({args.requests}, clients) "
            f"questions of examples/questions.jsonl, in order, sent by `clients` threads; {compared}. The parallel "
            "column is serve.parallel for ragtune, --parallel for llama-server. KV cache per "
            f"sequence: {kv / 2**20:.0f} MiB (llm.context_window + llm.max_new_tokens tokens).",
            table("what | value", machine),
            table("model | clients | parallel | answered (200) | requests/s | answer tokens/s | p50 | p95", rows),
            f"Load average (1, 5, 15 min) at start {load_start}, at end {loadavg()}."
            + (f" Note: {note}." if note else ""),
        ]
    )
    write_section(args.out, "bench_serve_parallel", report, title="# ragtune benchmarks")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
