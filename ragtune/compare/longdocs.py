"""Retrieval on long documents (squad-long): which setting finds the passage that holds the answer.

The corpus is ingested once per index-deciding config into a work folder and reused while its inputs
(document bytes, embedder, rag and index settings) are unchanged. Every retrieval setting of
ragtune.compare.settings is scored on the same questions with ragtune.compare.retrieval, per contextual
variant where the config has the key; paired differences (hybrid - dense, contextual - plain) are
bootstrapped on the per-question evidence hit@5.
"""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.config import Config, load_config, to_dict
from models.paths import index_dir
from models.storage import atomic_write_json, read_json, sha256_file
from ragtune.compare.evidence import DEPTH, KS
from ragtune.compare.keys import chunking
from ragtune.compare.metrics import paired_difference, summary
from ragtune.compare.phases import digest, tree_digest
from ragtune.compare.questions import Question, read_questions, sample
from ragtune.compare.retrieval import SettingRun, run_settings
from ragtune.compare.settings import CONTEXTUAL_KEY
from ragtune.compare.tables import pct, say, table

COMPARED = "evidence@5"  # the per-question score the paired differences are taken on


@dataclass(frozen=True)
class Corpus:
    docs: Path  # the folder that is ingested (the dataset's own when every article is used)
    questions: list[Question]
    articles: int
    gold_articles: int


def select_corpus(dataset: Path, work: Path, docs: int | None, limit: int | None, seed: int) -> Corpus:
    """All articles, or `docs` of them: half gold articles (seeded), the rest distractors; then the
    questions whose gold articles are all in, a seeded sample of `limit` of them."""
    questions = read_questions(dataset / "questions.jsonl")
    files = sorted(p.name for p in (dataset / "docs").iterdir() if p.suffix == ".txt")
    gold = sorted({d for q in questions for d in q.docs})
    if docs is None or docs >= len(files):
        chosen, folder = files, dataset / "docs"
    else:
        rng = random.Random(seed)
        picked = rng.sample(gold, min(len(gold), max(1, docs // 2)))
        others = [f for f in files if f not in set(gold)]
        chosen = sorted(picked + rng.sample(others, min(len(others), docs - len(picked))))
        folder = work / f"corpus-{digest(chosen)[:12]}"
        folder.mkdir(parents=True, exist_ok=True)
        for name in chosen:  # copies, not links: ingest reads regular files under the folder it walks
            if not (folder / name).is_file():
                shutil.copyfile(dataset / "docs" / name, folder / name)
    inside = set(chosen)
    kept = [q for q in questions if q.docs and set(q.docs) <= inside]
    return Corpus(folder, sample(kept, limit, seed), len(chosen), len(inside.intersection(gold)))


def index_config(overrides: list[str], name: str = "bench") -> Config:
    return load_config(None, [*overrides, f"index.name={name}"])


def built_index(corpus: Corpus, overrides: list[str], embedder: Any, work: Path) -> dict[str, Any]:
    """The corpus ingested under `overrides`, reused from `work` when the same inputs built it before.

    Returns {"name", "chunks", "ingest_s", "documents", "reused", "built_at"}; RAGTUNE_HOME is the caller's.
    """
    from rag.collection import current_generation
    from rag.ingest import ingest

    config = index_config(overrides)
    index = {k: v for k, v in to_dict(config.index).items() if k not in ("name", "ef_search")}
    # Only what decides the vectors and chunks: query-time settings (retriever, fusion, top_k) reuse the index.
    key = digest("bench-retrieval", tree_digest(corpus.docs), to_dict(config.embedder), chunking(config), index)
    name = f"squad-{key[:12]}"
    config = index_config(overrides, name)
    record_file = work / "records" / f"{name}.json"
    if record_file.is_file() and current_generation(index_dir(config)) is not None:
        record = {**read_json(record_file, "benchmark index record"), "reused": True}
        say(f"[index] {name}: reused ({record['chunks']} chunks, built {record['built_at']})")
        return record
    say(f"[index] {name}: ingesting {corpus.articles} articles from {corpus.docs} ...")
    summary = ingest([corpus.docs], config, embedder, rebuild=True, progress=False)
    record = {
        "name": name,
        "chunks": summary.total_chunks,
        "documents": len(summary.added),
        "ingest_s": round(summary.seconds, 1),
        "built_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "skipped": summary.skipped,
    }
    atomic_write_json(record_file, record)
    say(f"[index] {name}: {summary.line()}")
    return {**record, "reused": False}


def contextual_variants() -> list[tuple[str, list[str]]]:
    """(label, overrides) of the two ways an index can be built: plain and contextual chunks."""
    return [("plain chunks", [f"{CONTEXTUAL_KEY}=false"]), ("contextual chunks", [f"{CONTEXTUAL_KEY}=true"])]


def score_variant(
    corpus: Corpus, overrides: list[str], settings: list[Any], embedder: Any, work: Path
) -> tuple[dict[str, Any], list[SettingRun]]:
    """One index (built or reused) and every setting scored on it."""
    record = built_index(corpus, overrides, embedder, work)

    def make_config(extra: list[str]) -> Config:
        return load_config(None, [*overrides, f"index.name={record['name']}", *extra, f"rag.top_k={DEPTH}"])

    runs, _ = run_settings(settings, make_config, corpus.questions, corpus.docs, embedder, progress=False)
    for run in runs:
        if run.skipped:
            say(f"[accuracy] {run.setting.label}: skipped ({run.skipped})")
        else:
            rate = sum(r[COMPARED] for r in run.rows) / len(run.rows)
            say(f"[accuracy] {run.setting.label}: evidence hit@5 {rate:.3f} over {len(run.rows)} questions")
    return record, runs


def _cell(values: list[float], percent: bool = True) -> str:
    figure = summary(values)
    low, high = figure["ci95"]
    if not percent:
        return f"{figure['mean']:.3f} ({low:.3f}-{high:.3f})"
    return f"{100 * figure['mean']:.1f} ({100 * low:.1f}-{100 * high:.1f})"


def milliseconds(values: list[float], q: float) -> str:
    """The q-th percentile of latencies in seconds, as milliseconds with one decimal."""
    return f"{1000 * pct(values, q):.1f}"


def accuracy_table(runs: list[SettingRun]) -> str:
    """Per setting: doc and evidence hit@k (%, 95% CI), MRR (95% CI), latency p50 / p95; skipped ones with why."""
    header = " | ".join(
        ["setting", *(f"doc hit@{k}" for k in KS), *(f"evidence hit@{k}" for k in KS), "MRR", "p50 ms", "p95 ms"]
    )
    rows = []
    for run in runs:
        if run.skipped:
            rows.append([run.setting.label, f"skipped: {run.skipped}", *[""] * (2 * len(KS) + 2)])
            continue
        cells = [_cell([r[f"{kind}@{k}"] for r in run.rows]) for kind in ("doc", "evidence") for k in KS]
        cells.append(_cell([r["rr"] for r in run.rows], percent=False))
        cells += [milliseconds(run.latencies, 50), milliseconds(run.latencies, 95)]
        rows.append([run.setting.label, *cells])
    return table(header, rows)


def paired_rows(variants: dict[str, list[SettingRun]]) -> list[list[str]]:
    """hybrid - dense within each variant, and contextual - plain per setting, on per-question evidence@5."""

    def diff(a: SettingRun, b: SettingRun) -> str:
        found = paired_difference([r[COMPARED] for r in a.rows], [r[COMPARED] for r in b.rows])
        low, high = found["ci95"]
        return f"{100 * found['mean']:+.1f} points ({100 * low:+.1f} to {100 * high:+.1f})"

    rows = []
    for variant, runs in variants.items():
        done = {r.setting.label: r for r in runs if not r.skipped}
        dense = done.get("dense")
        hybrids = [label for label in done if label.startswith("hybrid")]
        if dense is None or not hybrids:
            why = "dense did not run" if dense is None else "no hybrid setting ran (unregistered, unselected or failed)"
            rows.append([f"hybrid - dense{_suffix(variant)}", f"not measured: {why}"])
        for label in hybrids:
            rows.append([f"{label} - dense{_suffix(variant)}", diff(done[label], dense)])
    if len(variants) == 2:
        (plain_name, plain), (ctx_name, ctx) = variants.items()
        plain_done = {r.setting.label: r for r in plain if not r.skipped}
        for run in ctx:
            if not run.skipped and run.setting.label in plain_done:
                label = f"{run.setting.label}: {ctx_name} - {plain_name}"
                rows.append([label, diff(run, plain_done[run.setting.label])])
    return rows


def _suffix(variant: str) -> str:
    return f" ({variant})" if variant else ""


def corpus_text(corpus: Corpus, dataset: Path, records: dict[str, dict[str, Any]]) -> str:
    gold = {d for q in corpus.questions for d in q.docs}
    lines = [
        f"{corpus.articles} articles of `{dataset}` ({corpus.gold_articles} of them gold articles of some question), "
        f"{len(corpus.questions)} questions on {len(gold)} of them (questions file sha256 "
        f"{sha256_file(dataset / 'questions.jsonl')[:12]}). Each question's gold article is its `doc`; an answer "
        f"found in another article does not count. Retrieval depth {DEPTH}; hit@k over the first k chunks.",
        "",
    ]
    rows = []
    for variant, record in records.items():
        how = f"reused (built {record['built_at']})" if record["reused"] else "built in this run"
        rate = f"{record['chunks'] / record['ingest_s']:.1f} chunks/s" if record["ingest_s"] else ""
        cells = [record["name"], str(record["chunks"]), f"{record['ingest_s']} s", rate, how]
        rows.append([variant or "as configured", *cells])
    lines.append(table("chunks | index | count | ingest | ingest rate | when", rows))
    return "\n".join(lines)
