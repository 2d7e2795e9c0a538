"""The `ragtune compare` reports under serve.reports_dir: each a folder holding results.json, report.md and charts.

A report is named by its folder and a chart by its file name, each looked up in the folder's listing, never
joined to a path from the request. A folder without a readable results.json is not a report; one whose
results.json is damaged is listed with an `error` rather than breaking the list.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.config import Config
from ragtune.serve.errors import ApiError
from ragtune.serve.schemas import quoted

RESULTS, MARKDOWN = "results.json", "report.md"


class Reports:
    """Read-only views of the report folders; every call lists the folder again, so new reports appear."""

    def __init__(self, config: Config) -> None:
        self.root = Path(config.serve.reports_dir).expanduser()

    def folders(self) -> dict[str, Path]:
        """Report folders by name: plain folders (no links, nothing hidden) holding a results.json file."""
        try:
            entries = sorted(self.root.iterdir())
        except OSError:  # no reports yet, or a folder that cannot be read
            return {}
        return {
            entry.name: entry
            for entry in entries
            if not entry.name.startswith(".")
            and not entry.is_symlink()
            and entry.is_dir()
            and (entry / RESULTS).is_file()
            and not (entry / RESULTS).is_symlink()
        }

    def listing(self) -> list[dict[str, Any]]:
        shown = []
        for name, folder in self.folders().items():
            try:
                created = int((folder / RESULTS).stat().st_mtime)
                raw = (folder / RESULTS).read_bytes()
            except OSError:  # unreadable (permissions) or gone meanwhile: not a report to show
                continue
            entry: dict[str, Any] = {"id": name, "object": "report", "verdict": None, "created": created, "paths": []}
            try:
                results = parse(raw)
            except ValueError as exc:
                entry["error"] = str(exc)
            else:
                entry["verdict"], entry["paths"] = verdict(results), compared(results)
            shown.append(entry)
        return shown

    def folder(self, report_id: str) -> Path:
        folder = self.folders().get(report_id)
        if folder is None:
            raise ApiError(404, f"no report {quoted(report_id)}; GET /v1/reports lists them", code="report_not_found")
        return folder

    def report(self, report_id: str) -> dict[str, Any]:
        folder = self.folder(report_id)
        shown: dict[str, Any] = {"id": report_id, "object": "report", "verdict": None, "markdown": None}
        try:
            results = parse((folder / RESULTS).read_bytes())
        except OSError:
            shown |= {"results": None, "error": "results.json cannot be read; check its permissions"}
        except ValueError as exc:
            shown |= {"results": None, "error": str(exc)}
        else:
            shown |= {"verdict": verdict(results), "results": results}
        markdown = folder / MARKDOWN
        if markdown.is_file() and not markdown.is_symlink():
            shown["markdown"] = markdown.read_text(encoding="utf-8", errors="replace")
        shown["charts"] = sorted(self.charts(folder))
        return shown

    def charts(self, folder: Path) -> dict[str, Path]:
        return {
            p.name: p for p in folder.glob("*.png") if not p.name.startswith(".") and not p.is_symlink() and p.is_file()
        }

    def chart(self, report_id: str, name: str) -> Path:
        """The chart `name` (without .png) of a report, if its folder lists it."""
        chart = self.charts(self.folder(report_id)).get(f"{name}.png")
        if chart is None:
            raise ApiError(
                404,
                f"report {quoted(report_id)} has no chart {quoted(name + '.png')}; GET /v1/reports/ID lists its charts",
                code="chart_not_found",
            )
        return chart


def parse(raw: bytes) -> dict[str, Any]:
    """results.json as written by `ragtune compare`; ValueError saying what is wrong otherwise."""
    try:
        results = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"results.json is damaged ({exc}); run `ragtune compare` again to rewrite it") from None
    if not isinstance(results, dict):
        raise ValueError("results.json does not hold an object; run `ragtune compare` again to rewrite it")
    return results


def verdict(results: dict[str, Any]) -> str | None:
    found = results.get("verdict")
    return found if isinstance(found, str) else None


def compared(results: dict[str, Any]) -> list[str]:
    """The answer paths the report compares (base, rag, finetune, hybrid)."""
    paths = results.get("paths")
    return [str(p) for p in paths] if isinstance(paths, dict) else []
