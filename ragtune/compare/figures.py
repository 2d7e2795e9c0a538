"""The report's one table of all figures, and the per-question answers: plain rows both pages render."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ragtune.compare.results import PRIMARY_LABELS
from ragtune.compare.verdict import duration, pct, points

Row = tuple[str, list[str]]
RETRIEVAL_LABELS = {
    "doc_hit": "doc hit@{k} (a gold document in the top {k} chunks)",
    "evidence_hit": "evidence hit@{k} (a top-{k} chunk from a gold document holds an answer)",
}


def interval(value: dict[str, Any] | None) -> str:
    if not value or value.get("mean") is None:
        return ""
    low, high = value["ci95"]
    return f"{pct(value['mean'])} ({pct(low)}-{pct(high)})"


def seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f} s"


def mebibytes(value: float | None) -> str:
    if not value:
        return ""
    return f"{value / 1024:.1f} GiB" if value >= 1024 else f"{value:.0f} MiB"


def size(value: int | None) -> str:
    if not value:
        return "0"
    return f"{value / 1024:.0f} KiB" if value < 2**20 else mebibytes(value / 2**20)


# Checkable answers (ragtune.compare.citations), shown where a path measured them.
CHECK_LABELS = {
    "citation_rate": "citation rate (answers citing a retrieved source as [n])",
    "written_citation_rate": "citations written by the model itself",
    "citation_precision": "citation precision (cited sources that support the answer)",
    "supported_citation_on_correct": "right answers citing a supporting source",
    "groundedness": "groundedness (answer found in the retrieved text)",
    "judged_faithfulness": "judged faithfulness (answers the judge model finds supported)",
    "judge_agreement": "judge agrees with the lexical check (answers and held-back drafts)",
    "refusal_precision": "refusal precision (refusals on unanswerable questions)",
    "refusal_recall": "refusal recall (unanswerable questions refused)",
    "false_refusal_rate": "false refusals (answerable questions refused)",
    "contains_unchecked": "answer contained without the support check (its drafts shown)",
}


def judge_figure(name: str, metrics: dict[str, Any]) -> str:
    """A judge statistic without a share's summary (kappa, AUC) and its interval; "undefined" where it is."""
    if "judge_model" not in metrics:
        return ""
    value, ci = metrics.get(name), metrics.get(f"{name}_ci95")
    if value is None:
        return "undefined"
    return f"{value:.2f} ({ci[0]:.2f} to {ci[1]:.2f})" if ci else f"{value:.2f}"


def _measured(entries: list[dict[str, Any]], name: str) -> bool:
    return any(((e["metrics"] or {}).get(name) or {}).get("n") for e in entries)


def _metric_rows(entries: list[dict[str, Any]], metric: str) -> list[Row]:
    def row(name: str, label: str) -> Row:
        return label, [interval((e["metrics"] or {}).get(name)) for e in entries]

    def plain(label: str, show: Callable[[dict[str, Any]], str]) -> Row:
        return label, [show(e["metrics"]) if e["metrics"] else "" for e in entries]

    others = (("em", "exact match"), ("f1", "token F1"), ("contains", "answer contained"))
    rows = [row(metric, f"{PRIMARY_LABELS[metric]} (95% CI)")] + [row(n, label) for n, label in others if n != metric]
    if any((e["metrics"] or {}).get("macro_f1") is not None for e in entries):
        rows.append(plain("closed-set scoring", lambda m: m.get("closed_set_scoring", "generate")))
        if any((e["metrics"] or {}).get("choice_accuracy_norm") for e in entries):
            rows.append(row("choice_accuracy_norm", "choice accuracy, per-byte likelihood (acc_norm)"))
        rows.append(plain("macro-F1", lambda m: f"{m['macro_f1']:.3f}"))
        rows.append(plain("unparseable answers", lambda m: str(len(m["unparseable"]))))
    rows += [row(n, label) for n, label in CHECK_LABELS.items() if _measured(entries, n)]
    if any((e["metrics"] or {}).get("judge_model") for e in entries):
        rows.append(plain("judge-lexical Cohen's kappa", lambda m: judge_figure("judge_kappa", m)))
        rows.append(plain("judge margin AUC against the lexical check", lambda m: judge_figure("judge_auc", m)))
        rows.append(plain("judge model", lambda m: m.get("judge_model", "")))
    hit = next((k for e in entries for k in (e["metrics"] or {}) if k.startswith("hit@")), None)
    if hit:
        rows.append(row(hit, f"{hit} (a gold document among the chunks read)"))
        per_chunk = dict.fromkeys(
            k for e in entries for k in (e["metrics"] or {}) if k.startswith(("doc_hit@", "evidence_hit@"))
        )
        rows += [row(name, RETRIEVAL_LABELS[name.split("@")[0]].format(k=name.split("@")[1])) for name in per_chunk]
        rows.append(row("mrr", "MRR (first chunk from a gold document)"))
    rows.append(plain("refusals", lambda m: str(m["refusals"])))
    return rows


def _latency_rows(entries: list[dict[str, Any]]) -> list[Row]:
    def both(key: str) -> list[str]:
        values = []
        for e in entries:
            found = e["latency"][key] if e["latency"] else {"p50": None}
            values.append(f"{seconds(found['p50'])} / {seconds(found['p95'])}" if found["p50"] is not None else "")
        return values

    speed = [e["latency"]["tokens_per_s"]["p50"] if e["latency"] else None for e in entries]
    return [
        ("first token p50 / p95", both("first_token_s")),
        ("answer p50 / p95", both("total_s")),
        ("generation tokens/s p50", ["" if v is None else f"{v:.1f}" for v in speed]),
    ]


def _cost_rows(entries: list[dict[str, Any]]) -> list[Row]:
    def row(label: str, key: str, show: Callable[[Any], str]) -> Row:
        return label, [show(e["cost"][key]) for e in entries]

    def spent(value: float | None) -> str:
        return duration(value) if value else ""

    tuned = any(e["cost"].get("embedder") for e in entries)
    rows = [
        row("one-off cost", "one_off_s", lambda v: duration(v) if v else "none"),
        row("index build", "index_build_s", spent),
        row("question synthesis", "synth_s", spent),
        row("RAFT data", "raft_data_s", spent),
        row("training", "training_s", spent),
        # None: a trained embedder, every parameter of which is trained (not an adapter's count).
        row("trainable parameters", "trainable_params", lambda v: "all of the embedder's" if v is None else f"{v:,}"),
        row("peak RAM (any step)", "peak_rss_mb", mebibytes),
        row("disk (index + adapter or embedder)" if tuned else "disk (index + adapter)", "disk_bytes", size),
        row("reused from earlier runs", "reused", ", ".join),
    ]
    if tuned:
        queries = [e["cost"].get("embedder_queries_s") for e in entries]
        rows[5:5] = [
            ("trained embedder", [e["cost"].get("embedder") or "" for e in entries]),
            ("embedder queries (part of training)", [duration(q) if q is not None else "" for q in queries]),
        ]
    return rows


def _update_rows(results: dict[str, Any]) -> list[Row]:
    update = results.get("update")
    if not update:
        return []
    rows = [update["paths"].get(p, {}) for p in results["paths"]]

    def before_after(r: dict[str, Any]) -> str:
        return f"{interval(r.get('old_before'))} -> {interval(r.get('old'))}" if r.get("old") else ""

    took = [duration(r["update_s"]) if r.get("update_s") is not None else "" for r in rows]
    return [
        ("update: time until answerable", took),
        ("update: new questions", [interval(r.get("new")) for r in rows]),
        ("update: old questions, before -> after", [before_after(r) for r in rows]),
    ]


def figure_rows(results: dict[str, Any]) -> list[Row]:
    """(figure, value per path) for every figure of the run, in the order of results["paths"]."""
    entries = list(results["paths"].values())
    rows: list[Row] = [("status", [e["status"] for e in entries])]
    rows += _metric_rows(entries, results["primary_metric"]) + _latency_rows(entries) + _cost_rows(entries)
    return rows + _update_rows(results)


def answer_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per question: its text, accepted answers and each path's answer, sources and right/wrong mark."""
    metric = results["primary_metric"]
    table: dict[str, dict[str, Any]] = {}
    for path, entry in results["paths"].items():
        if not entry["answers"]:
            continue
        for line in Path(entry["answers"]).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            item = table.setdefault(
                row["id"], {"id": row["id"], "question": row["question"], "answers": row["answers"]}
            )
            right = row["choice"] in row["answers"] if metric == "choice_accuracy" else bool(row[metric])
            item.setdefault("by", {})[path] = {"text": row["prediction"], "sources": row["sources"], "right": right}
    return list(table.values())


def retrieval_table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """`compare --retriever auto`: every retrieval setting's figures and its paired difference from the best."""
    retrieval = results.get("retrieval") or {}
    if not retrieval.get("settings"):
        return None
    first = next((e["metrics"] for e in retrieval["settings"].values() if e["metrics"]), {})
    names = [n for n in first if n.startswith(("doc_hit@", "evidence_hit@"))] + ["mrr"]
    header = ["setting", *(n.replace("_", " ") if n != "mrr" else "MRR" for n in names), "p50 / p95"]
    header.append(f"minus {retrieval['choice']} on {retrieval['metric'].replace('_', ' ')} (paired 95% CI)")
    rows = []
    for label, entry in retrieval["settings"].items():
        if entry["status"] != "done":
            rows.append([label, f"skipped: {entry['reason']}", *[""] * (len(header) - 2)])
            continue
        latency = entry["latency"]["retrieve_s"]
        diff = retrieval["differences"].get(label)
        versus = ""
        if diff is not None:
            versus = f"{points(diff['mean'])} ({points(diff['ci95'][0])} to {points(diff['ci95'][1])})"
        cells = [interval(entry["metrics"][n]) for n in names]
        rows.append([label, *cells, f"{1000 * latency['p50']:.1f} / {1000 * latency['p95']:.1f} ms", versus])
    return header, rows


def retrieval_choice(results: dict[str, Any]) -> str:
    """One sentence on how rag and hybrid retrieved (empty when as configured)."""
    retrieval = results.get("retrieval") or {}
    if not retrieval.get("choice"):
        return ""
    done = sum(e["status"] == "done" for e in retrieval["settings"].values())
    return (
        f"rag and hybrid retrieved with {retrieval['choice']} ({' '.join(retrieval['overrides'])}): the best of "
        f"{done} retrieval settings on {retrieval['metric'].replace('_', ' ')}, scored without the LM on "
        f"{retrieval['scored_questions']} questions ({duration(retrieval['wall_s'])})."
    )


def differences_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    for pair, diff in results["differences"].items():
        low, high = diff["ci95"]
        lines.append(f"{pair}: {100 * diff['mean']:+.1f} points (95% CI {100 * low:+.1f} to {100 * high:+.1f})")
    return lines
