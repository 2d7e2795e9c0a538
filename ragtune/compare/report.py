"""A compare run's report: results.json, report.md and a self-contained report.html (charts inlined).

All three come from one results dict, so they always agree; they are rewritten after an interruption
too, holding what finished and naming what did not.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from models.generate import resolve_backend
from models.storage import atomic_write_json, atomic_write_text
from ragtune.compare.charts import render_charts
from ragtune.compare.figures import answer_rows, differences_lines, figure_rows, retrieval_choice, retrieval_table
from ragtune.compare.progress import Progress
from ragtune.compare.results import assemble
from ragtune.compare.tables import machine_rows, table
from ragtune.compare.verdict import verdict

PACKAGES = ("torch", "transformers", "sentence-transformers", "peft", "hnswlib", "ragtune")
INTERVALS = (
    "Intervals are 95% percentile-bootstrap intervals over questions; latency is per question, end to end; "
    "tokens/s is left blank where answers were too short (one token) to time the decoding."
)
DIFFERENCES = "Paired differences on the primary metric (same questions; an interval excluding 0 is a real difference):"


def _incomplete(results: dict[str, Any]) -> str:
    missing = ", ".join(results["unfinished"]) or "nothing"
    why = results["stopped_by"] or "not finished"
    return f"Incomplete run ({why}): missing {missing}. Re-run the same command to finish it; finished steps are kept."


def _scope(results: dict[str, Any]) -> str:
    q = results["questions"]
    sample = f", a seeded sample (seed {q['seed']}) of {q['limit']}" if q["limit"] else ""
    used = results.get("backends") or {}  # reports written before it named no backends
    engines = f" Backends: index {used['index']}, llm {used['llm']}." if used else ""
    return f"Questions: {q['file']} ({q['asked']} asked{sample}); documents: {results['docs']['folder']}.{engines}"


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return (text if len(text) <= limit else text[: limit - 1] + "…").replace("|", "\\|")


def _md_answer(got: dict[str, Any] | None) -> str:
    if got is None:
        return ""
    sources = f" [{', '.join(Path(s).name for s in got['sources'])}]" if got["sources"] else ""
    return ("✓ " if got["right"] else "✗ ") + _one_line(got["text"]) + sources


def markdown(results: dict[str, Any], charts: dict[str, Path]) -> str:
    names = list(results["paths"])
    lines = ["# ragtune compare", ""]
    if not results["complete"]:
        lines += [f"**{_incomplete(results)}**", ""]
    lines += [_scope(results), ""]
    if results["command"]:
        lines += [f"Command: `{results['command']}`", ""]
    lines += ["## Verdict", "", results["verdict"], "", "## All figures", ""]
    lines += [table(" | ".join(["figure", *names]), [[label, *values] for label, values in figure_rows(results)])]
    lines += ["", INTERVALS, ""]
    if results["differences"]:
        lines += [DIFFERENCES, ""] + [f"- {line}" for line in differences_lines(results)] + [""]
    if settings := retrieval_table(results):
        header, rows = settings
        lines += ["## Retrieval settings", "", retrieval_choice(results), "", table(" | ".join(header), rows), ""]
    if charts:
        lines += ["## Charts", ""] + [f"![{name}]({path.name})" for name, path in charts.items()] + [""]
    lines += ["## Machine", "", table(" | ", list(results["machine"].items()))]
    answers = [
        [item["id"], _one_line(item["question"]), _one_line(" / ".join(item["answers"]))]
        + [_md_answer(item["by"].get(path)) for path in names]
        for item in answer_rows(results)
    ]
    lines += ["", "## Answers", "", table(" | ".join(["id", "question", "accepted", *names]), answers)]
    return "\n".join(lines) + "\n"


_CSS = """body{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}
td,th{border:1px solid #ccc;padding:.3rem .6rem;vertical-align:top;text-align:left}
th{background:#f4f4f4}.right{color:#1a7f37}.wrong{color:#b42318}
.warn{background:#fff4e5;padding:.6rem;border:1px solid #f0b429}
img{max-width:100%}.src{color:#666;font-size:85%}
.verdict{font-size:110%;background:#f6f8fa;padding:1rem;border-left:4px solid #1f77b4}"""


def _html_table(header: list[str], rows: list[list[str]], escaped: bool = False) -> str:
    """A table; cells are escaped here unless the caller built them from escaped parts already."""
    cell = (lambda v: v) if escaped else html.escape
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html_answer(got: dict[str, Any] | None) -> str:
    if got is None:
        return ""
    mark = "<span class=right>✓</span>" if got["right"] else "<span class=wrong>✗</span>"
    sources = "".join(f"<div class=src>{html.escape(s)}</div>" for s in got["sources"])
    return f"{mark} {html.escape(got['text'])}{sources}"


def html_page(results: dict[str, Any], charts: dict[str, Path]) -> str:
    e = html.escape
    names = list(results["paths"])
    parts = ["<!doctype html><html lang=en><meta charset=utf-8><title>ragtune compare</title>"]
    parts.append(f"<style>{_CSS}</style><body><h1>ragtune compare</h1>")
    if not results["complete"]:
        parts.append(f"<p class=warn>{e(_incomplete(results))}</p>")
    parts.append(f"<p>{e(_scope(results))}</p>")
    if results["command"]:
        parts.append(f"<p>Command: <code>{e(results['command'])}</code></p>")
    parts.append(f"<h2>Verdict</h2><p class=verdict>{e(results['verdict'])}</p><h2>All figures</h2>")
    parts.append(_html_table(["figure", *names], [[label, *values] for label, values in figure_rows(results)]))
    parts.append(f"<p>{e(INTERVALS)}</p>")
    if results["differences"]:
        items = "".join(f"<li>{e(line)}</li>" for line in differences_lines(results))
        parts.append(f"<p>{e(DIFFERENCES)}</p><ul>{items}</ul>")
    if settings := retrieval_table(results):
        parts.append(f"<h2>Retrieval settings</h2><p>{e(retrieval_choice(results))}</p>")
        parts.append(_html_table(*settings))
    for name, path in charts.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f'<h3>{e(name)}</h3><img alt="{e(name)} chart" src="data:image/png;base64,{data}">')
    parts.append("<h2>Machine</h2>" + _html_table(["", ""], [[k, v] for k, v in results["machine"].items()]))
    answers = [
        [e(item["id"]), e(item["question"]), e(" / ".join(item["answers"]))]
        + [_html_answer(item["by"].get(path)) for path in names]
        for item in answer_rows(results)
    ]
    parts.append("<h2>Answers</h2>" + _html_table(["id", "question", "accepted", *names], answers, escaped=True))
    return "\n".join(parts) + "\n</body></html>\n"


def machine_info() -> dict[str, str]:
    return dict(machine_rows(PACKAGES))


def write_report(progress: Progress) -> dict[str, Any]:
    """results.json, report.md, report.html and the chart PNGs under the run's folder."""
    out = progress.spec.out
    results = assemble(progress, machine_info() | {"LM engine": resolve_backend(progress.config.llm)})
    results["verdict"] = verdict(results)
    charts = render_charts(results, out)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", markdown(results, charts))
    atomic_write_text(out / "report.html", html_page(results, charts))
    return results
