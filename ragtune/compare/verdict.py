"""The verdict paragraph of a compare report, written from its numbers.

Each sentence reads a figure from results.json: which path is most accurate and whether the paired
95% interval separates it from the others, how it stands against the majority answer, latency, the
one-off cost and, when measured, the cost of an update and what it did to old and new answers. The
recommendation is the cheapest path among those the data cannot separate from the most accurate.
"""

from __future__ import annotations

from typing import Any

from ragtune.compare.results import PRIMARY_LABELS
from ragtune.compare.spec import uses_documents


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def points(value: float) -> str:
    return f"{100 * value + 0.0:+.1f}"  # + 0.0: a negated zero prints as +0.0, not -0.0


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "an unmeasured time"
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def difference(results: dict[str, Any], a: str, b: str) -> dict[str, Any] | None:
    """Paired difference a - b on the primary metric, from results["differences"] (stored once per pair)."""
    found = results["differences"].get(f"{a} - {b}")
    if found is not None:
        return found
    other = results["differences"].get(f"{b} - {a}")
    if other is None or other["mean"] is None:
        return None
    low, high = other["ci95"]
    return {"mean": -other["mean"], "ci95": [-high, -low], "n": other["n"]}


def _accuracy(results: dict[str, Any], done: dict[str, Any], metric: str) -> tuple[list[str], str, list[str]]:
    label = PRIMARY_LABELS[metric]
    means = {p: e["metrics"][metric]["mean"] for p, e in done.items()}
    best = max(means, key=lambda p: means[p])
    low, high = done[best]["metrics"][metric]["ci95"]
    asked = done[best]["metrics"][metric]["n"]
    top = [p for p in done if means[p] == means[best]]
    if means[best] == 0:
        return (
            [f"No path got any of these {asked} questions right ({label}), so nothing here favours one."],
            best,
            list(done),
        )
    if len(top) > 1:
        leaders = f"{', '.join(top[:-1])} and {top[-1]} score best, tied at"
    else:
        leaders = f"{best} scores best:"
    text = [f"On these {asked} questions {leaders} {pct(means[best])} {label} (95% CI {pct(low)}-{pct(high)})."]
    wins, ties, tied = [], [], [best]
    for other in done:
        if other == best:
            continue
        diff = difference(results, best, other)
        if diff is None:
            continue
        d_low, d_high = diff["ci95"]
        if d_low > 0:
            wins.append(
                f"{points(diff['mean'])} points over {other} (paired 95% CI {points(d_low)} to {points(d_high)})"
            )
        else:
            ties.append(f"{other} ({points(diff['mean'])} points, CI {points(d_low)} to {points(d_high)})")
            tied.append(other)
    if wins:
        text.append(f"{best} is ahead by {'; '.join(wins)}.")
    if ties:
        text.append(
            f"The differences to {', '.join(ties)} are within noise: each paired interval includes zero, so "
            "these questions cannot tell them apart."
        )
    if asked < 30:
        text.append(f"With only {asked} questions every interval is wide; add questions for a firmer answer.")
    majority = done[best]["metrics"].get("majority_baseline")
    if majority:
        share, answer = majority["accuracy"], majority["label"]
        if high < share:
            text.append(f"Every path is below always answering {answer!r} ({pct(share)} of this sample).")
        elif low <= share:
            text.append(f"No path is clearly better than always answering {answer!r} ({pct(share)} of this sample).")
        else:
            text.append(f"{best} beats always answering {answer!r} ({pct(share)} of this sample).")
    return text, best, tied


def _latency(done: dict[str, Any], best: str) -> list[str]:
    p50 = {p: e["latency"]["total_s"]["p50"] for p, e in done.items() if e["latency"]["total_s"]["p50"]}
    if best not in p50 or len(p50) < 2:
        return []
    fastest = min(p50, key=lambda p: p50[p])
    if fastest == best or p50[best] / p50[fastest] < 1.2:
        return [f"{best} is also among the fastest to answer (median {p50[best]:.2f} s per question)."]
    return [
        f"{fastest} answers {p50[best] / p50[fastest]:.1f}x faster than {best} "
        f"(median {p50[fastest]:.2f} s against {p50[best]:.2f} s per question)."
    ]


def _costs(done: dict[str, Any]) -> list[str]:
    parts = []
    for path, entry in done.items():
        cost = entry["cost"]
        pieces = []
        if cost["index_build_s"]:
            pieces.append(f"{duration(cost['index_build_s'])} of indexing")
        if cost["synth_s"]:
            pieces.append(f"{duration(cost['synth_s'])} of question synthesis")
        if cost["training_s"]:
            # rag-tuned-embedder trains its retriever's embedder, not the LM: said so, as it costs differently.
            what = "embedder training" if cost.get("embedder") else "training"
            pieces.append(f"{duration(cost['training_s'])} of {what}")
        if pieces:
            parts.append(f"{path} {' + '.join(pieces)}")
    return [f"Building cost {'; '.join(parts)}."] if parts else []


def _update(results: dict[str, Any], metric: str) -> list[str]:
    update = results.get("update")
    if not update:
        return []
    rows = {p: r for p, r in update["paths"].items() if uses_documents(p) and r["update_s"] is not None}
    if not rows:
        return []
    added = update.get("added_documents")
    what = f"{added} new documents" if added is not None else "the new documents"
    took = ", ".join(f"{p} {duration(r['update_s'])} ({r['how'].split(';')[0]})" for p, r in rows.items())
    text = [f"Adding {what} took {took}."]
    after = [
        f"{p} {pct(r['new']['mean'])}" for p, r in update["paths"].items() if r["new"] and r["new"]["mean"] is not None
    ]
    if after:
        text.append(f"Afterwards the new questions were answered by {', '.join(after)} ({PRIMARY_LABELS[metric]}).")
    for path, row in rows.items():
        before, now = row["old_before"], row["old"]
        if before and now and before["mean"] is not None and now["mean"] is not None:
            change = now["mean"] - before["mean"]
            if abs(change) >= 0.005:
                word = "fell" if change < 0 else "rose"
                text.append(f"On the old questions {path} {word} from {pct(before['mean'])} to {pct(now['mean'])}.")
    return text


def _recommend(results: dict[str, Any], done: dict[str, Any], tied: list[str]) -> str:
    update = (results.get("update") or {}).get("paths", {})

    def work(path: str) -> float:
        return done[path]["cost"]["one_off_s"] + (update.get(path, {}).get("update_s") or 0)

    def median(path: str) -> float:
        return done[path]["latency"]["total_s"]["p50"] or 0.0

    choice = min(tied, key=lambda p: (work(p), median(p)))
    if len(tied) == 1:
        return f"For this data: {choice}, the only path at the top once the intervals are taken into account."
    others = [p for p in tied if p != choice]
    against = ", ".join(f"{duration(work(p))} for {p}" for p in others)
    text = (
        f"For this data: {choice}. It cannot be separated from {', '.join(others)} on accuracy and needs the "
        f"least work to build and keep up to date ({duration(work(choice))}, against {against})"
    )
    if all(median(choice) <= median(p) for p in others):
        text += ", and it answers at least as fast"
    return text + "."


def verdict(results: dict[str, Any]) -> str:
    metric = results["primary_metric"]
    done = {p: e for p, e in results["paths"].items() if e["status"] == "done" and e["metrics"][metric]["n"]}
    if not done:
        return "No path has finished yet, so there is nothing to compare."
    text, best, tied = _accuracy(results, done, metric)
    text += _latency(done, best) + _costs(done) + _update(results, metric)
    if len(done) > 1:
        text.append(_recommend(results, done, tied))
    if not results["complete"]:
        text.append(f"This run is incomplete ({', '.join(results['unfinished']) or results['stopped_by']} missing).")
    return " ".join(text)
