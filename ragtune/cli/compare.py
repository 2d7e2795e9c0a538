"""`ragtune eval` (one answering path over a question set, scored) and `ragtune compare` (every path)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from models.config import Config, to_dict
from models.modes import MODES, answer_mode
from models.storage import atomic_write_json, atomic_write_text
from ragtune.cli.common import Subcommands, add_command, add_out, add_sample
from ragtune.compare.spec import PATHS, TUNED_EMBEDDER

COMPARE_DESCRIPTION = """\
RAG or fine-tuning, measured on your documents and questions. Every path answers the same questions:
  base      the LM alone (closed book)
  rag       retrieval from an index of --docs
  finetune  an adapter trained on --train-data, or on pairs synthesised from --docs (--synth)
  hybrid    retrieval over a RAFT-style adapter (trained on the pairs inside RAG prompts with
            distractors) when the pairs name their source (`doc` or `chunk`), else the finetune one
  rag-tuned-embedder  rag over an index built with an embedder trained on --docs (opt-in: minutes of
            training; --paths rag,rag-tuned-embedder)
The report gives accuracy with 95% intervals and paired differences, latency, one-off cost (indexing,
synthesis, training, peak RAM, disk, trainable parameters) and, with --update-docs, how long each path
takes to answer questions on new documents and what it then gets right on the old ones. With gold
documents, retrieval is scored per chunk (document and evidence hit@1/5/10, MRR); --retriever auto
first scores every retrieval setting without the LM and lets rag and hybrid use the best. A verdict
paragraph is written from those numbers. Output: OUT/report.md, report.html (self-contained),
results.json, answers/*/answers.jsonl and the chart PNGs.
"""

COMPARE_EPILOG = """\
examples:
  # the shipped example: four paths, a training file, then two new documents arrive
  ragtune compare --docs examples/docs --questions examples/questions.jsonl \\
      --train-data examples/train.jsonl --update-docs examples/update/docs \\
      --update-questions examples/update/questions.jsonl \\
      --update-train-data examples/update/train.jsonl -o reports/example

  # does an embedder trained on the documents retrieve better than the packaged one?
  ragtune compare --docs DOCS --questions q.jsonl --paths rag,rag-tuned-embedder -o reports/embedder

  # rag and hybrid retrieve with the setting that finds the most evidence (scored first, no LM)
  ragtune compare --docs DOCS --questions q.jsonl --train-data train.jsonl --retriever auto -o reports/auto

  # no training file: question/answer pairs synthesised from the documents by the local LM
  ragtune compare --docs DOCS --questions q.jsonl --synth -o reports/run1

  # PubMedQA, a seeded sample of 200 test questions (see reports/pubmedqa/README.md)
  ragtune compare --docs data/pubmedqa/docs --questions data/pubmedqa/questions.jsonl \\
      --train-data data/pubmedqa/train.jsonl --limit 200 --seed 0 -o reports/pubmedqa

Re-running the same command resumes: finished steps are kept, indexes and adapters whose inputs
(documents, training data, settings, base model) are unchanged are reused, never silently retrained.
"""


def add_parsers(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "compare",
        help="RAG or fine-tuning? measure every path on your questions and write a report",
        description=COMPARE_DESCRIPTION,
        epilog=COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--docs", required=True, type=Path, metavar="DIR", help="the documents (what rag indexes)")
    p.add_argument("--questions", required=True, type=Path, metavar="FILE", help="question set (.jsonl)")
    p.add_argument(
        "--paths",
        default=",".join(MODES),
        help=f"comma-separated paths to run, from {', '.join(PATHS)} (default: the four modes); {TUNED_EMBEDDER}: "
        "rag over an index built with an embedder trained on --docs first (`train --target embedder`, "
        "finetune.embedder.*; minutes more, so not run by default)",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--train-data", type=Path, metavar="FILE", help="training file for finetune and hybrid")
    source.add_argument("--synth", action="store_true", help="synthesise training pairs from --docs with the LM")
    p.add_argument("--update-docs", type=Path, metavar="DIR", help="new documents for the knowledge-update round")
    p.add_argument("--update-questions", type=Path, metavar="FILE", help="questions on the new documents")
    p.add_argument(
        "--update-train-data", type=Path, metavar="FILE", help="training pairs for the new documents (or --synth)"
    )
    p.add_argument(
        "--retriever",
        choices=("configured", "auto"),
        default="configured",
        help="configured: rag and hybrid retrieve as the config says (default); auto: score every retrieval "
        "setting first (`eval --retrieval-only`, no LM) and let rag and hybrid use the best on evidence hit@5",
    )
    add_sample(p, "the report")
    add_out(p, "DIR", "report folder (resumed if present)")

    p = add_command(
        sub,
        "eval",
        help="score the configured mode on a question set",
        description="Answer every question of a JSONL question set (question, answers, optional doc or docs, "
        "choices, id; `answers: []` for a question the documents do not answer) with the configured mode and report "
        "exact match, token F1, answer-contained, choice accuracy and macro-F1 (closed sets, scored by the likeliest "
        "choice or by parsing a written answer: eval.closed_set), citation rate and precision, groundedness (and, "
        "with eval.judge.model, judged faithfulness and its agreement with the lexical check), refusal "
        "precision and recall, and latency; when gold documents are known, retrieval per chunk: "
        "document hit@1/5/10, evidence hit@1/5/10 (a top-k chunk from a gold document holds an accepted answer) "
        "and MRR, scored on a second retrieval of 10 chunks beside the answer's own rag.top_k. Each mean has "
        "a bootstrap 95%% interval. --retrieval-only scores every retrieval setting instead, without the LM "
        "(with --embedders, for several embedders, each on its own index, paired against embedder.model). "
        "Index the documents first (`ragtune ingest DOCS`) for the rag and hybrid modes.",
        epilog=EVAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--questions", required=True, type=Path, metavar="FILE", help="question set (.jsonl)")
    p.add_argument(
        "--path",
        choices=list(MODES),
        help="what answers: base (the LM alone, closed book) or a mode (default: the configured mode)",
    )
    p.add_argument(
        "--docs",
        type=Path,
        metavar="DIR",
        help="folder the questions' `doc` paths are relative to (default: docs/ beside FILE)",
    )
    p.add_argument(
        "--retrieval-only",
        action="store_true",
        help="score every registered retrieval setting on the current index, without loading the LM; "
        "prints a table per setting and the best on evidence hit@5 with paired intervals",
    )
    p.add_argument(
        "--embedders",
        nargs="+",
        metavar="NAME",
        help="with --retrieval-only: score every setting for each embedder too (a preset, a trained embedder "
        "from `ragtune embedders list` or a local sentence-transformers folder), each on its own index "
        "(INDEX--NAME, built or brought up to date from --docs), with paired differences from embedder.model "
        "(the reference, always scored) on the same questions",
    )
    add_sample(p, "the results")
    add_out(p, "DIR", "write results.json (and answers.jsonl) here", required=False)
    p.add_argument("--json", action="store_true", help="print results.json instead of a summary")


EVAL_EPILOG = """\
examples:
  ragtune eval --questions examples/questions.jsonl                 # the configured mode, gold docs in examples/docs
  ragtune eval --questions q.jsonl --docs DOCS --retrieval-only     # which retriever finds the evidence? no LM
  ragtune eval --questions q.jsonl --docs DOCS --retrieval-only --set rag.rerank.model=FOLDER -o runs/retrieval
  # which embedder finds the evidence? each gets its own index of DOCS; paired against embedder.model
  ragtune eval --retrieval-only --questions q.jsonl --docs DOCS --embedders minilm-l6 manuals-emb
"""


def cmd_eval(args: argparse.Namespace, config: Config) -> int:
    from models.answer import answer
    from ragtune.compare.evaluate import aggregate, answers_jsonl, evaluate, scoring_retriever
    from ragtune.compare.questions import read_questions, sample
    from ragtune.compose import build_answerer, require_adapter

    if args.retrieval_only:
        return cmd_eval_retrieval(args, config)
    if args.embedders:
        from models.errors import InputError

        raise InputError("--embedders needs --retrieval-only: embedders are compared on retrieval alone; add it")
    questions = sample(read_questions(args.questions), args.limit, args.seed)
    docs_root = args.docs or args.questions.parent / "docs"
    path = args.path or config.mode
    mode = answer_mode(path)
    rank = judge = None
    if not (mode.retrieves or mode.adapted):  # base: the LM alone, closed book
        from ragtune.closed_book import ClosedBookAnswerer
        from ragtune.compose import build_generator

        answerer = ClosedBookAnswerer(config, build_generator(replace(config, mode="rag"), progress=not args.json))
    else:
        config = replace(config, mode=path)
        require_adapter(config)  # before any model loads
        embedder = None
        if mode.retrieves:  # one embedder for the answer's retriever and the deeper one scored
            from models.embedders import build_embedder
            from ragtune.compare.judge import load_judge

            judge = load_judge(config, progress=not args.json)  # first: one that cannot load fails before all else
            embedder = build_embedder(config.embedder)
            rank = scoring_retriever(config, embedder).retrieve
        answerer = build_answerer(config, embedder=embedder, progress=not args.json)
    started = time.perf_counter()
    scored = evaluate(
        questions,
        partial(answer, answerer),
        docs_root=docs_root if docs_root.is_dir() else None,
        retrieves=mode.retrieves,
        rank=rank,
        choose=answerer.choose if config.eval.closed_set == "loglik" else None,
        judge=judge.rate if judge else None,
    )
    results = {
        **aggregate(questions, scored, config.rag.top_k, f"{judge.model} ({judge.backend})" if judge else None),
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
    print_summary(results)
    if args.out:
        print(f"wrote {args.out / 'results.json'} and {args.out / 'answers.jsonl'}")
    return 0


def cmd_eval_retrieval(args: argparse.Namespace, config: Config) -> int:
    """`eval --retrieval-only`: every retrieval setting scored over the configured index; no LM is loaded."""
    from models.config import load_config
    from models.embedders import build_embedder
    from models.errors import InputError
    from models.paths import index_dir
    from rag.collection import current_generation, missing_index
    from rag.retrieve import RETRIEVERS
    from ragtune.compare.evidence import DEPTH
    from ragtune.compare.questions import read_questions, sample
    from ragtune.compare.results import backends
    from ragtune.compare.retrieval import score_settings, summary_lines
    from ragtune.compare.settings import retrieval_settings

    if args.path is not None:
        raise InputError("--path and --retrieval-only do not go together: retrieval-only scores no answers; drop one")
    questions = sample(read_questions(args.questions), args.limit, args.seed)
    docs_root = args.docs or args.questions.parent / "docs"
    if not docs_root.is_dir():
        raise InputError(f"--docs {docs_root}: not a folder; give the folder the questions' `doc` paths start from")
    candidates = None
    if args.embedders:  # every index is ingested from --docs; names are checked before any model loads
        from ragtune.compare.embedders import resolve_embedders

        candidates = resolve_embedders(args.embedders, config)
    elif current_generation(index_dir(config)) is None:
        raise missing_index(index_dir(config))
    depth = max(config.rag.top_k, DEPTH)

    def make_config(extra: list[str]) -> Config:
        # The setting's overrides after the user's: the setting decides what it varies, the user the rest.
        return load_config(args.config, [*args.overrides, *extra, f"rag.top_k={depth}"])

    started = time.perf_counter()
    settings = retrieval_settings(RETRIEVERS, config)
    if candidates is None:
        scored = score_settings(
            settings, make_config, questions, docs_root, build_embedder(config.embedder), progress=not args.json
        )
    else:
        from ragtune.compare.embedders import score_embedders

        log = partial(print, file=sys.stderr)
        scored = score_embedders(
            candidates, settings, config, make_config, questions, docs_root, progress=not args.json, log=log
        )
    results = {
        "path": "retrieval-only",
        **scored,
        "seconds": round(time.perf_counter() - started, 2),
        "index": config.index.name,
        "backends": backends(config),
        "sample": {"file": str(args.questions), "limit": args.limit, "seed": args.seed},
        "config": to_dict(config),
    }
    if args.out:
        atomic_write_json(args.out / "results.json", results)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    ran = sum(e["status"] == "done" for e in results["settings"].values())
    embedders = f"for {len(candidates)} embedders, " if candidates else ""
    print(
        f"retrieval-only: {results['scored_questions']} of {results['questions']} questions name gold documents; "
        f"index {results['index']} ({results['backends']['index']}); "
        f"settings: {ran} scored, {len(results['settings']) - ran} skipped, "
        f"{embedders}in {results['seconds']:.0f}s\n"
    )
    if candidates is None:
        print("\n".join(summary_lines(results)))
    else:
        from ragtune.compare.embedders import embedder_lines

        print("\n".join(embedder_lines(results)))
    if results["missing_gold_files"]:
        print(
            f"warning: {results['missing_gold_files']} gold documents are not under {docs_root} "
            f"(e.g. {results['missing_gold_examples'][0]}); questions on them count as misses"
        )
    if args.out:
        print(f"wrote {args.out / 'results.json'}")
    return 0


def print_summary(results: dict[str, Any]) -> None:
    """Each metric on one line (mean and 95% interval where it has one), then the latency percentiles."""
    print(f"{results['path']}: {results['questions']} questions in {results['seconds']:.0f}s")
    metrics = results["metrics"]
    for name, value in metrics.items():
        if name.endswith("_ci95"):
            continue  # printed with its figure (judge_kappa, judge_auc)
        if isinstance(value, float) and metrics.get(f"{name}_ci95"):
            low, high = metrics[f"{name}_ci95"]
            print(f"  {name:16} {value:.3f}  (95% CI {low:.3f} to {high:.3f})")
        elif name == "majority_baseline":
            print(f"  {name:16} {value['accuracy']:.3f}  (always {value['label']!r})")
        elif isinstance(value, dict) and value.get("mean") is not None:
            low, high = value["ci95"]
            print(f"  {name:16} {value['mean']:.3f}  (95% CI {low:.3f}-{high:.3f})")
        elif isinstance(value, str):
            print(f"  {name:16} {value}")
        elif isinstance(value, float):
            print(f"  {name:16} {value:.3f}")
        elif isinstance(value, int):
            print(f"  {name:16} {value}")
        elif value is None:  # a figure that is undefined on this sample (judge_kappa: one verdict throughout)
            print(f"  {name:16} undefined")
        elif isinstance(value, list):
            print(f"  {name:16} {len(value)} ({', '.join(value[:5])}{'...' if len(value) > 5 else ''})")
    latency = results["latency"]["total_s"]
    if latency["p50"] is not None:
        print(f"  latency          p50 {latency['p50']:.2f}s, p95 {latency['p95']:.2f}s")


def cmd_compare(args: argparse.Namespace, config: Config) -> int:
    import shlex

    from ragtune.python_api import Ragtune

    results = Ragtune(config).compare(
        args.docs,
        args.questions,
        args.out,
        paths=tuple(p.strip() for p in args.paths.split(",") if p.strip()),
        train_data=args.train_data,
        synth=args.synth,
        update_docs=args.update_docs,
        update_questions=args.update_questions,
        update_train_data=args.update_train_data,
        limit=args.limit,
        seed=args.seed,
        retriever=args.retriever,
        command=shlex.join(["ragtune", *sys.argv[1:]]),
    )
    print(f"\n{results['verdict']}\n")
    print(f"report: {args.out / 'report.md'} and {args.out / 'report.html'}; data: {args.out / 'results.json'}")
    return 0


COMMANDS = {"eval": cmd_eval, "compare": cmd_compare}
