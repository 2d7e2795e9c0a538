"""`ragtune eval`: one answering path over a question set, scored, with results written for scripts."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from models.config import Config, to_dict
from models.storage import atomic_write_json, atomic_write_text


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "eval",
        parents=[common],
        help="score the configured mode on a question set",
        description="Answer every question of a JSONL question set (question, answers, optional doc, choices, id) "
        "with the configured mode and report exact match, token F1, answer-contained, choice accuracy and macro-F1 "
        "(closed sets), hit@k and MRR (when gold documents are known), refusals and latency, each mean with a "
        "bootstrap 95%% interval. Index the documents first (`ragtune ingest DOCS`) for the rag and hybrid modes.",
    )
    p.add_argument("--questions", required=True, type=Path, metavar="FILE", help="question set (.jsonl)")
    p.add_argument(
        "--path",
        choices=["base", "rag", "finetune", "hybrid"],
        help="what answers: base (the LM alone, closed book) or a mode (default: the configured mode)",
    )
    p.add_argument(
        "--docs",
        type=Path,
        metavar="DIR",
        help="folder the questions' `doc` paths are relative to (default: docs/ beside FILE)",
    )
    p.add_argument("--limit", type=int, help="a seeded sample of N questions (recorded in the results)")
    p.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")
    p.add_argument("-o", "--out", type=Path, metavar="DIR", help="write results.json and answers.jsonl here")
    p.add_argument("--json", action="store_true", help="print results.json instead of a summary")


def cmd_eval(args: argparse.Namespace, config: Config) -> int:
    from ragtune.app import build_pipeline
    from ragtune.compare.evaluate import aggregate, answers_jsonl, evaluate
    from ragtune.compare.questions import read_questions, sample

    questions = sample(read_questions(args.questions), args.limit, args.seed)
    docs_root = args.docs or args.questions.parent / "docs"
    path = args.path or config.mode
    if path == "base":
        from ragtune.app import build_generator
        from ragtune.closed_book import ClosedBookPipeline

        pipeline = ClosedBookPipeline(config, build_generator(replace(config, mode="rag"), progress=not args.json))
    else:
        config = replace(config, mode=path)
        pipeline = build_pipeline(config, progress=not args.json)
    started = time.perf_counter()
    scored = evaluate(
        questions,
        pipeline.answer,
        docs_root=docs_root if docs_root.is_dir() else None,
        retrieves=path in ("rag", "hybrid"),
    )
    results = {
        **aggregate(questions, scored),
        "path": path,
        "seconds": round(time.perf_counter() - started, 2),
        "sample": {"file": str(args.questions), "limit": args.limit, "seed": args.seed},
        "config": to_dict(config),
    }
    if args.out:
        atomic_write_json(args.out / "results.json", results)
        atomic_write_text(args.out / "answers.jsonl", answers_jsonl(scored))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{path}: {len(scored)} questions in {results['seconds']:.0f}s")
    for name, value in results["metrics"].items():
        if name == "majority_baseline":
            print(f"  {name:16} {value['accuracy']:.3f}  (always {value['label']!r})")
        elif isinstance(value, dict) and value.get("mean") is not None:
            low, high = value["ci95"]
            print(f"  {name:16} {value['mean']:.3f}  (95% CI {low:.3f}-{high:.3f})")
        elif isinstance(value, float):
            print(f"  {name:16} {value:.3f}")
        elif isinstance(value, int):
            print(f"  {name:16} {value}")
        elif isinstance(value, list):
            print(f"  {name:16} {len(value)} ({', '.join(value[:5])}{'...' if len(value) > 5 else ''})")
    latency = results["latency"]["total_s"]
    if latency["p50"] is not None:
        print(f"  latency          p50 {latency['p50']:.2f}s, p95 {latency['p95']:.2f}s")
    if args.out:
        print(f"wrote {args.out / 'results.json'} and {args.out / 'answers.jsonl'}")
    return 0


COMMANDS = {"eval": cmd_eval}
