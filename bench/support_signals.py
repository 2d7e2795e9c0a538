"""The default LM's own evidence on each calibration draft (bench/support_set.py), for bench/support_checks.py.

Per answered draft, with citation markers taken out of the answer:
- `context`: log P(answer | the answering prompt with its passages), summed over the answer's tokens;
- `empty`: the same with an empty <context> (what the model would say from the question alone);
- `yes` / `no`: the judge prompt's (ragtune/compare/judge.py) first-word log-probabilities with the default LM.
`context - empty` per token is how much the passages made the answer likelier (pointwise mutual information):
an answer the model would have written without the passages is not read from them. Resumable: one line per draft.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.common import say

FIELDS = ("id", "tokens", "context", "empty", "yes", "no")


def answer_text(row: dict[str, Any]) -> str:
    from rag.prompt import CITATION

    return " ".join(CITATION.sub(" ", row["text"]).split())


def judged(row: dict[str, Any]) -> bool:
    """A draft with an answer to weigh: not the model's own refusal, and read from some passage."""
    return not row["refused"] and bool(row["sources"]) and bool(answer_text(row))


def read_signals(path: Path) -> dict[str, dict[str, float]]:
    """id -> signals, every line checked to hold FIELDS."""
    signals = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        row = json.loads(line)
        missing = [key for key in FIELDS if key not in row]
        if missing:
            raise ValueError(f"{path}:{number}: missing field(s) {missing}; bench/support_signals.py writes {FIELDS}")
        signals[row["id"]] = row
    return signals


def measure_signals(drafts: Path, out: Path, limit: int | None) -> None:
    from bench.support_checks import read_drafts
    from models.config import load_config
    from models.generate import load_language_model
    from rag.prompt import Passage, build_messages
    from ragtune.compare.judge import Judge
    from ragtune.compose import quiet_libraries

    quiet_libraries()
    rows = [r for r in read_drafts(drafts) if judged(r)]
    done = set(read_signals(out)) if out.exists() else set()
    todo = [r for r in rows if r["id"] not in done][:limit]
    generator = load_language_model(load_config(None, []).llm, progress=False).generator()
    judge = Judge(generator, "default", "auto")
    started = time.perf_counter()
    with out.open("a", encoding="utf-8") as sink:
        for n, row in enumerate(todo, 1):
            answer = answer_text(row)
            passages = [Passage(s["number"], s["path"], s["text"]) for s in row["sources"]]
            context = generator.continuation_logprobs(build_messages(row["question"], passages), [answer])[0]
            empty = generator.continuation_logprobs(build_messages(row["question"], []), [answer])[0]
            _, verdict = judge.verdict(row["question"], answer, passages)
            record = {"id": row["id"], "tokens": generator.count_tokens(answer), "context": context, "empty": empty}
            sink.write(json.dumps({**record, **verdict}) + "\n")
            sink.flush()
            if n % 10 == 0 or n == len(todo):
                say(f"weighed {n}/{len(todo)} ({(time.perf_counter() - started) / n:.1f} s each)")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drafts", type=Path, default=Path("runs/support/drafts.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("runs/support/signals.jsonl"))
    parser.add_argument("--limit", type=int, help="weigh at most this many drafts this run (resumable)")
    args = parser.parse_args(argv)
    measure_signals(args.drafts, args.out, args.limit)
    return 0
