"""Two answer folders of the same questions side by side: each one's score, their paired difference, how often
they answered alike.

For runs that differ in something `compare` keeps fixed within one report, e.g. the same adapters on two
engines (`--set llm.backend=transformers` against llama.cpp) or one path before and after a change. Each
folder is an eval's output (answers.jsonl; `compare` writes one per path under OUT/answers/PATH). Questions
are paired by id; only the ids both folders answered count, and the output says how many that is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from models.errors import InputError
from ragtune.compare.metrics import paired_difference, summary
from ragtune.compare.results import PRIMARY_LABELS, row_score


def read_rows(folder: Path) -> dict[str, dict[str, Any]]:
    """answers.jsonl of an eval folder by question id; a missing or unreadable file is an InputError naming it."""
    path = folder / "answers.jsonl"
    if not path.is_file():
        raise InputError(f"{path}: not found; pass an eval's output folder (compare writes OUT/answers/PATH)")
    rows = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            rows[row["id"]] = row
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InputError(f'{path}:{number}: not an answers.jsonl row (JSON with an "id")') from None
    return rows


def pair_runs(a: Path, b: Path, metric: str | None = None) -> dict[str, Any]:
    """Scores of `a` and `b` on the questions both answered, `a - b` paired, and the share answered alike."""
    rows_a, rows_b = read_rows(a), read_rows(b)
    common = [i for i in rows_a if i in rows_b]
    if not common:
        raise InputError(f"{a} and {b} answered no question in common (questions are paired by id)")
    if metric is None:  # as compare picks it: choice accuracy when every question is closed-set
        metric = "choice_accuracy" if all(rows_a[i].get("choice") is not None for i in common) else "contains"
    scores = []
    for folder, rows in ((a, rows_a), (b, rows_b)):
        try:
            scores.append([row_score(rows[i], metric) for i in common])
        except KeyError as exc:
            raise InputError(
                f"{folder / 'answers.jsonl'}: a row has no {exc.args[0]!r}, which {metric} needs; "
                "pass the folders `ragtune eval` or `compare` wrote"
            ) from None
    field = "choice" if metric == "choice_accuracy" else "prediction"
    alike = [float(rows_a[i][field] == rows_b[i][field]) for i in common]
    return {
        "metric": metric,
        "questions": len(common),
        "only_in_a": len(rows_a) - len(common),
        "only_in_b": len(rows_b) - len(common),
        "a": summary(scores[0]),
        "b": summary(scores[1]),
        "a_minus_b": paired_difference(scores[0], scores[1]),
        "same_answer": summary(alike),
        "same_answer_field": field,
    }


def render(result: dict[str, Any], a: Path, b: Path) -> str:
    def share(s: dict[str, Any]) -> str:
        low, high = s["ci95"]
        return f"{s['mean']:.1%} (95% CI {low:.1%} to {high:.1%})"

    diff = result["a_minus_b"]
    low, high = diff["ci95"]
    label = PRIMARY_LABELS.get(result["metric"], result["metric"])
    lines = [
        f"{result['questions']} questions answered by both "
        f"({result['only_in_a']} only in A, {result['only_in_b']} only in B); {label}:",
        f"  A {a}: {share(result['a'])}",
        f"  B {b}: {share(result['b'])}",
        f"  A - B paired: {diff['mean'] * 100:+.1f} points (95% CI {low * 100:+.1f} to {high * 100:+.1f})",
        f"  the same {result['same_answer_field']}: {share(result['same_answer'])}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python scripts/paired_runs.py run-llamacpp/answers/hybrid run-peft/answers/hybrid",
    )
    parser.add_argument("a", type=Path, help="an eval's output folder (answers.jsonl)")
    parser.add_argument("b", type=Path, help="another one, of the same questions")
    parser.add_argument("--metric", choices=sorted(PRIMARY_LABELS), help="default: as compare picks it")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    try:
        result = pair_runs(args.a, args.b, args.metric)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else render(result, args.a, args.b))
    return 0
