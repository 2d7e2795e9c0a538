"""Benchmark an embedder trained on a corpus's own documents against the packaged one; write BENCHMARKS.md.

For each corpus the documents are ingested with the packaged embedder, an embedder is trained on the same
documents alone (`ragtune train --target embedder`: no questions), the documents are ingested again with it,
and dense and the default hybrid retriever are scored with both on the corpus's questions: hit@1/5 and MRR
with 95% intervals, the paired difference tuned - packaged, and the one-off cost (queries, training,
re-embedding) with peak memory.

- squad-long: the 48 articles its questions are on, in a seeded order: the first 20 are the development
  part (the training settings were chosen there), the other 28 are held out; the chosen part's articles
  and their questions; evidence hits (a retrieved chunk of the gold article holds an accepted answer).
- pubmedqa: every abstract (CONTEXTS only) and the 500 test questions (the article titles as questions);
  document hits, as an answer is yes/no and names no passage.

    python scripts/bench_embedder_tuning.py                                    # both corpora, writes BENCHMARKS.md
    python scripts/bench_embedder_tuning.py --corpus squad-long --articles 4 \\
        --set finetune.embedder.max_steps=2 --out /tmp/bench.md                # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import busy_note, machine_rows, say, table
from models.config import Config, load_config
from models.storage import atomic_write_json, write_section
from ragtune.compare.phases import digest, tree_digest

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
WORK = Path.home() / ".cache" / "ragtune-bench" / "embedder-tuning"
DEV_ARTICLES = 20  # the first squad-long gold articles (seeded order): the training settings were chosen on them
SETTINGS = (("dense", ("rag.retriever=dense",)), ("hybrid (default)", ("rag.retriever=hybrid",)))
METRICS = (("hit@1", "@1"), ("hit@5", "@5"), ("MRR", "rr"))


@dataclass(frozen=True)
class Corpus:
    name: str
    docs: Path
    questions: Path
    kind: str  # "evidence" (squad-long) or "doc" (pubmedqa): which hit the table reports


def squad_corpus(work: Path, articles: int, part: str) -> Corpus:
    """Up to `articles` squad-long articles of `part` (dev: the tuning part; test: held out), copied, with their
    questions."""
    dataset = DATASETS / "squad-long"
    lines = (dataset / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line) for line in lines if line.strip()]
    gold = sorted({q["doc"] for q in questions})
    random.Random(1).shuffle(gold)
    chosen = (gold[:DEV_ARTICLES] if part == "dev" else gold[DEV_ARTICLES:])[:articles]
    folder = work / f"squad-{part}-{len(chosen)}"
    (folder / "docs").mkdir(parents=True, exist_ok=True)
    for name in chosen:
        if not (folder / "docs" / name).is_file():
            shutil.copyfile(dataset / "docs" / name, folder / "docs" / name)
    kept = [q for q in questions if q["doc"] in set(chosen)]
    (folder / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in kept), encoding="utf-8")
    label = f"squad-long ({'held out' if part == 'test' else 'dev'}, {len(chosen)} articles)"
    return Corpus(label, folder / "docs", folder / "questions.jsonl", "evidence")


def pubmedqa_corpus(work: Path) -> Corpus:
    from ragtune.data.importers import import_pubmedqa

    folder = work / "pubmedqa"
    if not (folder / "questions.jsonl").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        import_pubmedqa(DATASETS / "pubmedqa", folder)
    return Corpus("PubMedQA (1000 abstracts, 500 test questions)", folder / "docs", folder / "questions.jsonl", "doc")


def trained(corpus: Corpus, overrides: list[str]) -> tuple[str, dict[str, Any]]:
    """The embedder trained on the corpus's documents under `overrides`: trained now, or reused from an earlier run."""
    from models.trained_embedders import find_trained_embedder, read_embedder_manifest
    from ragtune.embedder_training import train_embedder_on_docs

    config = load_config(None, overrides)
    name = "bench-" + digest(corpus.name, json.dumps(overrides), tree_digest(corpus.docs))[:12]
    folder = find_trained_embedder(name)
    if folder is not None:
        say(f"[train] {name}: reused")
        return name, read_embedder_manifest(folder)
    say(f"[train] {name}: training on {corpus.docs} ...")
    train_embedder_on_docs(config, [corpus.docs], name, progress=False, note=say)
    return name, read_embedder_manifest(find_trained_embedder(name))  # type: ignore[arg-type]


def scored(
    corpus: Corpus, overrides: list[str], work: Path
) -> tuple[dict[str, Any], dict[str, list[dict[str, float]]]]:
    """The corpus ingested with embedder.model as `overrides` set it, and each setting's per-question rows."""
    from models.embedders import build_embedder
    from ragtune.compare.evidence import DEPTH
    from ragtune.compare.longdocs import Corpus as LongCorpus
    from ragtune.compare.longdocs import built_index
    from ragtune.compare.questions import read_questions
    from ragtune.compare.retrieval import run_settings
    from ragtune.compare.settings import Setting

    questions = read_questions(corpus.questions)
    long_corpus = LongCorpus(corpus.docs, questions, len(list(corpus.docs.iterdir())), len(questions))
    embedder = build_embedder(load_config(None, overrides).embedder)
    record = built_index(long_corpus, overrides, embedder, work)

    def make_config(extra: list[str]) -> Config:
        return load_config(None, [*overrides, f"index.name={record['name']}", *extra, f"rag.top_k={DEPTH}"])

    settings = [Setting(label, tuple(extra)) for label, extra in SETTINGS]
    runs, _ = run_settings(settings, make_config, questions, corpus.docs, embedder, progress=False)
    for run in runs:
        if run.skipped:
            raise RuntimeError(f"{run.setting.label} did not run: {run.skipped}")
    return record, {run.setting.label: run.rows for run in runs}


def measure(corpus: Corpus, overrides: list[str], work: Path) -> dict[str, Any]:
    from ragtune.compare.metrics import paired_difference, summary

    base_overrides = [*overrides, "embedder.model=minilm-l6"]
    base_record, base_rows = scored(corpus, base_overrides, work)
    started = time.perf_counter()
    name, manifest = trained(corpus, overrides)
    train_wall = time.perf_counter() - started
    tuned_record, tuned_rows = scored(corpus, [*overrides, f"embedder.model={name}"], work)
    figures: dict[str, Any] = {"corpus": corpus.name, "kind": corpus.kind, "embedder": name, "settings": {}}
    for label, _ in SETTINGS:
        entry: dict[str, Any] = {}
        for metric, key in METRICS:
            column = key if key == "rr" else f"{corpus.kind}{key}"
            base = [row[column] for row in base_rows[label]]
            tuned = [row[column] for row in tuned_rows[label]]
            entry[metric] = {
                "packaged": summary(base),
                "tuned": summary(tuned),
                "difference": paired_difference(tuned, base),
            }
        figures["settings"][label] = entry
    queries = manifest["queries"]
    figures["cost"] = {
        "chunks": manifest["data"]["chunks"],
        "queries_method": queries["method"],
        "queries": queries["count"],
        "queries_s": queries["seconds"],
        "steps": manifest["steps"],
        "training_s": manifest["seconds"],
        "train_wall_s": round(train_wall, 1),
        "peak_rss_mb": manifest["peak_rss_mb"],
        "ingest_packaged_s": base_record["ingest_s"],
        "ingest_tuned_s": tuned_record["ingest_s"],
        "index_chunks": tuned_record["chunks"],
        "questions": len(base_rows[SETTINGS[0][0]]),
        "settings": manifest["settings"],
    }
    return figures


def _percent(stat: dict[str, Any], points: bool = False) -> str:
    low, high = stat["ci95"]
    if points:
        return f"{100 * stat['mean']:+.1f} ({100 * low:+.1f} to {100 * high:+.1f})"
    return f"{100 * stat['mean']:.1f} ({100 * low:.1f}-{100 * high:.1f})"


def _fraction(stat: dict[str, Any], signed: bool = False) -> str:
    low, high = stat["ci95"]
    sign = "+" if signed else ""
    return f"{stat['mean']:{sign}.3f} ({low:{sign}.3f} to {high:{sign}.3f})"


def markdown(results: list[dict[str, Any]], command: str, seconds: float) -> str:
    rows, paired, costs = [], [], []
    for result in results:
        hit = "evidence" if result["kind"] == "evidence" else "document"
        for label, entry in result["settings"].items():
            for who in ("packaged", "tuned"):
                cells = [_percent(entry[m][who]) if m != "MRR" else _fraction(entry[m][who]) for m, _ in METRICS]
                rows.append([result["corpus"], label, f"{hit} hits", who, *cells])
            diffs = [
                _percent(entry[m]["difference"], points=True) if m != "MRR" else _fraction(entry[m]["difference"], True)
                for m, _ in METRICS
            ]
            paired.append([result["corpus"], label, *diffs])
        cost = result["cost"]
        per_thousand = 1000 * (cost["queries_s"] + cost["training_s"]) / max(1, cost["chunks"])
        costs.append(
            [
                result["corpus"],
                f"{cost['chunks']} chunks, {cost['queries']} {cost['queries_method']} queries",
                f"{cost['queries_s']:.0f} s",
                f"{cost['steps']} steps, {cost['training_s']:.0f} s",
                f"{cost['ingest_tuned_s']:.0f} s for {cost['index_chunks']} chunks "
                f"(packaged {cost['ingest_packaged_s']:.0f} s)",
                f"{per_thousand:.0f} s",
                f"{cost['peak_rss_mb']:.0f} MiB",
            ]
        )
    settings = results[0]["cost"]["settings"] if results else {}
    return "\n\n".join(
        [
            "## Embedder trained on the corpus's own documents (`ragtune train --target embedder`)",
            f"Command: `{command}` ({seconds / 60:.0f} min). Training settings (finetune.embedder): "
            f"`{json.dumps(settings)}`; chosen on the development articles of squad-long, reported on held-out "
            "articles and on PubMedQA. The trained embedder never sees a question. " + busy_note(),
            table("machine | value", machine_rows(("torch", "sentence-transformers", "ragtune"))),
            "### Retrieval, packaged (minilm-l6) and trained embedder\n\nHits in percent, MRR as a fraction, 95% "
            "bootstrap intervals over questions; rag.top_k as the retrieval benchmark uses it.",
            table("corpus | setting | scored on | embedder | hit@1 | hit@5 | MRR (document)", rows),
            "### Paired differences, trained - packaged\n\nSame questions; an interval that excludes 0 is a real "
            "difference (points for hits).",
            table("corpus | setting | hit@1 | hit@5 | MRR (document)", paired),
            "### One-off cost",
            table(
                "corpus | trained on | queries | training | re-embedding | queries + training per 1,000 chunks "
                "| peak memory",
                costs,
            ),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=["squad-long", "pubmedqa", "both"], default="both")
    parser.add_argument("--articles", type=int, default=28, help="squad-long articles of --part (default: all 28)")
    parser.add_argument("--part", choices=["dev", "test"], default="test", help="squad-long part (default test)")
    parser.add_argument("--work", type=Path, default=WORK, help=f"indexes and trained embedders (default {WORK})")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="report file (a section in it)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    from ragtune.compose import quiet_libraries

    quiet_libraries()
    os.environ["RAGTUNE_HOME"] = str(args.work / "home")
    started = time.perf_counter()
    corpora = []
    if args.corpus in ("squad-long", "both"):
        corpora.append(squad_corpus(args.work, args.articles, args.part))
    if args.corpus in ("pubmedqa", "both"):
        corpora.append(pubmedqa_corpus(args.work))
    results = [measure(corpus, list(args.overrides), args.work) for corpus in corpora]
    command = "python scripts/bench_embedder_tuning.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    text = markdown(results, command.strip(), time.perf_counter() - started)
    if args.json:
        atomic_write_json(args.json, results)
    write_section(args.out, "embedder-tuning", text, title="# Benchmarks")
    print(text)
    return 0
