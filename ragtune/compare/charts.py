"""Bar charts of a compare run (PNG, matplotlib's Agg backend: no display, no fonts fetched)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from models.storage import atomic_write_bytes
from ragtune.compare.results import PRIMARY_LABELS
from ragtune.compare.spec import TUNED_EMBEDDER

COLOURS = {"base": "#8c8c8c", "rag": "#1f77b4", "finetune": "#d62728", "hybrid": "#9467bd", TUNED_EMBEDDER: "#17becf"}


def new_figure():
    """(pyplot, figure, axes) of one chart in the reports' size and style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ax.spines[["top", "right"]].set_visible(False)
    return plt, fig, ax


def save_figure(plt: Any, fig: Any, path: Path) -> Path:
    """The figure as a PNG at `path`, written atomically; the figure is closed."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def accuracy_chart(results: dict[str, Any], path: Path) -> Path | None:
    metric = results["primary_metric"]
    done = [(p, e["metrics"][metric]) for p, e in results["paths"].items() if e["metrics"]]
    done = [(p, m) for p, m in done if m["mean"] is not None]
    if not done:
        return None
    plt, fig, ax = new_figure()
    means = [100 * m["mean"] for _, m in done]
    errors = [[100 * (m["mean"] - m["ci95"][0]) for _, m in done], [100 * (m["ci95"][1] - m["mean"]) for _, m in done]]
    names = [p for p, _ in done]
    ax.bar(names, means, yerr=errors, capsize=6, color=[COLOURS.get(p, "#555") for p in names])
    majority = next(
        (
            e["metrics"]["majority_baseline"]
            for e in results["paths"].values()
            if (e["metrics"] or {}).get("majority_baseline")
        ),
        None,
    )
    if majority:
        ax.axhline(100 * majority["accuracy"], color="black", linestyle="--", linewidth=1)
        # Left of the first bar, where no error bar reaches the line.
        ax.text(-0.45, 100 * majority["accuracy"] + 1, f"always {majority['label']!r}", va="bottom", ha="left")
    ax.set_ylabel(f"{PRIMARY_LABELS[metric]} (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Accuracy with 95% bootstrap interval")
    return save_figure(plt, fig, path)


def latency_chart(results: dict[str, Any], path: Path) -> Path | None:
    done = [(p, e["latency"]["total_s"]) for p, e in results["paths"].items() if e["latency"]]
    done = [(p, t) for p, t in done if t["p50"] is not None]
    if not done:
        return None
    plt, fig, ax = new_figure()
    positions = range(len(done))
    ax.bar([x - 0.2 for x in positions], [t["p50"] for _, t in done], width=0.4, label="median", color="#1f77b4")
    ax.bar(
        [x + 0.2 for x in positions], [t["p95"] for _, t in done], width=0.4, label="95th percentile", color="#aec7e8"
    )
    ax.set_xticks(list(positions), [p for p, _ in done])
    ax.set_ylabel("seconds per question")
    ax.set_title("Answer latency")
    ax.legend(frameon=False)
    return save_figure(plt, fig, path)


def cost_chart(results: dict[str, Any], path: Path) -> Path | None:
    parts = [("index_build_s", "indexing", "#1f77b4"), ("synth_s", "synthesis", "#ff7f0e"),
             ("raft_data_s", "RAFT data", "#9467bd"), ("training_s", "training", "#d62728")]  # fmt: skip
    names = list(results["paths"])
    if not any(results["paths"][p]["cost"]["one_off_s"] for p in names):
        return None
    plt, fig, ax = new_figure()
    bottom = [0.0] * len(names)
    for key, label, colour in parts:
        values = [(results["paths"][p]["cost"][key] or 0) / 60 for p in names]
        if any(values):
            ax.bar(names, values, bottom=bottom, label=label, color=colour)
            bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("minutes (once)")
    ax.set_title("One-off cost before the first answer")
    ax.legend(frameon=False)
    return save_figure(plt, fig, path)


def update_chart(results: dict[str, Any], path: Path) -> Path | None:
    update = results.get("update")
    if not update:
        return None
    rows = [(p, r) for p, r in update["paths"].items() if r["new"] or r["old"]]
    if not rows:
        return None
    plt, fig, ax = new_figure()
    positions = range(len(rows))

    def heights(key: str) -> list[float]:
        return [100 * r[key]["mean"] if r[key] and r[key]["mean"] is not None else 0 for _, r in rows]

    ax.bar([x - 0.2 for x in positions], heights("old"), width=0.4, label="old questions", color="#7f7f7f")
    ax.bar([x + 0.2 for x in positions], heights("new"), width=0.4, label="new questions", color="#2ca02c")
    ax.set_xticks(list(positions), [p for p, _ in rows])
    ax.set_ylim(0, 100)
    ax.set_ylabel(f"{PRIMARY_LABELS[results['primary_metric']]} (%)")
    ax.set_title("After adding the new documents")
    ax.legend(frameon=False)
    return save_figure(plt, fig, path)


def render_charts(results: dict[str, Any], folder: Path) -> dict[str, Path]:
    """The charts that have data, as {name: PNG path}."""
    makers = {"accuracy": accuracy_chart, "latency": latency_chart, "cost": cost_chart, "update": update_chart}
    charts = {}
    for name, make in makers.items():
        made = make(results, folder / f"{name}.png")
        if made is not None:
            charts[name] = made
    return charts
