"""`ragtune eval --retrieval-only`: retrieval settings scored on a question set over one index, without an LM.

Each setting (ragtune.compare.settings) gets the user's config plus its overrides, with rag.top_k raised
to DEPTH; all share one embedder and the index the config names. Every question that names gold documents
is retrieved once per setting, timed end to end (embed, search, fusion, rerank) after one warm-up. The
winner has the highest evidence hit@5, ties broken by MRR, then by table order (simplest first: latency on
a small set is noise, and the first setting timed pays for warming caches);
every other setting gets the paired bootstrap interval of its difference from the winner.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from models.config import Config
from models.errors import InputError, RagtuneError
from ragtune.compare.evaluate import gold_paths, prompt_for
from ragtune.compare.evidence import DEPTH, ks_within, metric_label, score_ranking, summarise
from ragtune.compare.metrics import paired_difference, percentiles
from ragtune.compare.questions import Question
from ragtune.compare.settings import Setting

WINNER_METRIC = "evidence_hit@5"


class RetrievalEvalError(InputError):
    """Retrieval-only scoring cannot run on these questions or settings; the message says what to change."""


@dataclass
class SettingRun:
    """One setting's per-question scores and latencies, or why it was skipped."""

    setting: Setting
    rows: list[dict[str, float]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None


def run_setting(
    setting: Setting,
    make_config: Callable[[list[str]], Config],
    build: Callable[[Config], Any],
    questions: Sequence[Question],
    golds: Sequence[list[str]],
    progress: bool | None = None,
) -> SettingRun:
    """Retrieve every question with `setting`; a setting whose config or retriever fails is skipped.

    `build(config)` returns a checked retriever; errors after the warm-up are real failures and propagate.
    """
    if setting.skip:
        return SettingRun(setting, skipped=setting.skip)
    try:
        config = make_config(list(setting.overrides))
        retriever = build(config)
        retriever.retrieve(prompt_for(questions[0]))  # warm-up: opens the index, loads any reranker
    except RagtuneError as exc:
        return SettingRun(setting, skipped=str(exc))
    run = SettingRun(setting)
    started = time.perf_counter()
    ks = ks_within(max(config.rag.top_k, DEPTH))
    bar = tqdm(questions, desc=setting.label, unit="question", disable=None if progress is None else not progress)
    for question, gold in zip(bar, golds):
        begun = time.perf_counter()
        sources = retriever.retrieve(prompt_for(question)).sources
        run.latencies.append(time.perf_counter() - begun)
        run.rows.append(score_ranking([(s.path, s.text) for s in sources], gold, question.answers, ks))
    run.seconds = time.perf_counter() - started
    return run


def choose_winner(runs: dict[str, dict[str, Any]], metric: str = WINNER_METRIC) -> str | None:
    """The label with the best `metric` mean; ties: higher MRR, then the earlier (simpler) label.

    `runs` maps labels (in table order) to {"metrics": ..., "latency": {"retrieve_s": {"p50": ...}}}
    figures; skipped settings (metrics None) never win. None when no setting ran.
    """
    done = [label for label, run in runs.items() if run.get("metrics")]
    if not done:
        return None

    def rank(item: tuple[int, str]) -> tuple[float, float, int]:
        order, label = item
        figures = runs[label]
        return (-figures["metrics"][metric]["mean"], -figures["metrics"]["mrr"]["mean"], order)

    return min(enumerate(done), key=rank)[1]


def differences(per_question: dict[str, list[float]], winner: str) -> dict[str, Any]:
    """Each other setting's paired difference from the winner (label - winner), same questions."""
    base = per_question[winner]
    return {label: paired_difference(values, base) for label, values in per_question.items() if label != winner}


def assemble(runs: list[SettingRun], metric: str = WINNER_METRIC) -> dict[str, Any]:
    """results.json's "settings", "winner" and "differences" from the runs, in table order."""
    settings: dict[str, Any] = {}
    for run in runs:
        done = run.skipped is None
        settings[run.setting.label] = {
            "status": "done" if done else "skipped",
            "reason": run.skipped,
            "overrides": list(run.setting.overrides),
            "metrics": summarise(run.rows, _ks(run.rows)) if done else None,
            "latency": {"retrieve_s": percentiles(run.latencies)} if done else None,
            "seconds": round(run.seconds, 2) if done else None,
        }
    winner = choose_winner(settings, metric)
    scores = {r.setting.label: [row[per_question_key(metric)] for row in r.rows] for r in runs if r.skipped is None}
    return {
        "metric": metric,
        "winner": None
        if winner is None
        else {"label": winner, "overrides": settings[winner]["overrides"], metric: settings[winner]["metrics"][metric]},
        "differences": differences(scores, winner) if winner else {},
        "settings": settings,
    }


def _ks(rows: list[dict[str, float]]) -> tuple[int, ...]:
    return tuple(sorted(int(key[4:]) for key in rows[0] if key.startswith("doc@"))) if rows else ()


def per_question_key(metric: str) -> str:
    """The per-question key behind an aggregate metric: evidence_hit@5 -> evidence@5, mrr -> rr."""
    return "rr" if metric == "mrr" else metric.replace("_hit", "")


def run_settings(
    settings: Sequence[Setting],
    make_config: Callable[[list[str]], Config],
    questions: Sequence[Question],
    docs_root: Path,
    embedder: Any,
    progress: bool | None = None,
) -> tuple[list[SettingRun], list[Question]]:
    """Every setting run on the questions that name gold documents (returned with the runs, in order).

    `make_config(overrides)` is the user's config with the setting's overrides applied last (and
    rag.top_k >= DEPTH); the LM is never loaded.
    """
    from models.paths import index_dir
    from rag.retrieve import build_retriever

    scored = [(q, gold_paths(q, docs_root)) for q in questions]
    scored = [(q, gold) for q, gold in scored if gold]
    if not scored:
        raise RetrievalEvalError(
            "no question names its gold document; retrieval is scored against each question's `doc` or `docs` "
            '(e.g. "doc": "folder/file.txt", relative to --docs)'
        )

    def build(config: Config) -> Any:
        retriever = build_retriever(index_dir(config), config, embedder)
        retriever.check()
        return retriever

    kept, golds = [q for q, _ in scored], [gold for _, gold in scored]
    return [run_setting(s, make_config, build, kept, golds, progress) for s in settings], kept


def score_settings(
    settings: Sequence[Setting],
    make_config: Callable[[list[str]], Config],
    questions: Sequence[Question],
    docs_root: Path,
    embedder: Any,
    progress: bool | None = None,
) -> dict[str, Any]:
    """results.json's retrieval part: each setting's figures, the winner and the paired differences."""
    runs, kept = run_settings(settings, make_config, questions, docs_root, embedder, progress)
    return runs_result(runs, kept, len(questions), docs_root, max(make_config([]).rag.top_k, DEPTH))


def runs_result(
    runs: list[SettingRun], kept: Sequence[Question], questions: int, docs_root: Path, depth: int
) -> dict[str, Any]:
    """score_settings' figures from runs already made on `kept` (the scored ones of `questions`)."""
    golds = {g for q in kept for g in gold_paths(q, docs_root)}
    # Gold paths with no file under --docs: usually a wrong --docs, and every such question misses.
    missing = sorted(g for g in golds if not Path(g).is_file())
    return {
        **assemble(runs),
        "questions": questions,
        "scored_questions": len(kept),
        "depth": depth,
        "missing_gold_files": len(missing),
        "missing_gold_examples": missing[:5],
    }


def _cell(value: dict[str, Any] | None, percent: bool = True) -> str:
    if not value or value.get("mean") is None:
        return ""
    low, high = value["ci95"]
    if percent:
        return f"{100 * value['mean']:.1f}% ({100 * low:.1f}-{100 * high:.1f})"
    return f"{value['mean']:.3f} ({low:.3f}-{high:.3f})"


def setting_lines(label: str, entry: dict[str, Any]) -> list[str]:
    """One setting's table: doc and evidence hit at each k with 95% intervals, MRR, latency."""
    if entry["status"] != "done":
        return [f"{label}: skipped ({entry['reason']})"]
    metrics = entry["metrics"]
    ks = sorted(int(name.split("@")[1]) for name in metrics if name.startswith("doc_hit@"))
    lines = [f"{label}", f"  {'':14}" + "".join(f"{'@' + str(k):>24}" for k in ks)]
    for kind in ("doc", "evidence"):
        cells = "".join(f"{_cell(metrics[f'{kind}_hit@{k}']):>24}" for k in ks)
        lines.append(f"  {kind + ' hit':14}{cells}")
    latency = entry["latency"]["retrieve_s"]
    lines.append(f"  {'MRR':14}{_cell(metrics['mrr'], percent=False):>24}")
    lines.append(f"  {'latency':14}  p50 {1000 * latency['p50']:.1f} ms, p95 {1000 * latency['p95']:.1f} ms")
    return lines


def summary_lines(results: dict[str, Any]) -> list[str]:
    """What `eval --retrieval-only` prints: a table per setting, the winner and the paired differences."""
    lines: list[str] = []
    for label, entry in results["settings"].items():
        lines += setting_lines(label, entry) + [""]
    winner, metric = results["winner"], results["metric"]
    if winner is None:
        return lines + ["no setting could run; see the reasons above"]
    lines.append(f"best on {metric_label(metric)}: {winner['label']} {_cell(winner[metric])}")
    for label, diff in results["differences"].items():
        low, high = diff["ci95"]
        verdict = "worse" if high < 0 else "not separable"
        lines.append(
            f"  {label} - {winner['label']}: {100 * diff['mean']:+.1f} points "
            f"(paired 95% CI {100 * low:+.1f} to {100 * high:+.1f}; {verdict})"
        )
    return lines
