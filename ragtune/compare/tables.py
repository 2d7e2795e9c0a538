"""What a report prints: progress lines, percentiles, Markdown tables and the machine the figures came from."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np


def say(text: str) -> None:
    print(text, flush=True)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def table(header: str, rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; `header` names the columns as "a | b | c"."""
    lines = [f"| {header} |", "|" + "---|" * (header.count("|") + 1)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def loadavg() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _proc_field(path: str, key: str) -> str:
    try:
        lines = Path(path).read_text(encoding="ascii", errors="ignore").splitlines()
    except OSError:
        return "unknown"
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(key)), "unknown")


def _gib(key: str) -> str:
    value = _proc_field("/proc/meminfo", key)
    return f"{int(value.split()[0]) / 2**20:.1f} GiB" if value != "unknown" else value


def machine_rows(packages: tuple[str, ...], extra: tuple[tuple[str, str], ...] = ()) -> list[tuple[str, str]]:
    """CPU, cores, load, RAM, GPU, OS and package versions: what a reader needs to compare figures."""
    import torch

    rows = [
        ("CPU", _proc_field("/proc/cpuinfo", "model name")),
        ("logical cores", str(os.cpu_count())),
        ("cores usable by this process", str(len(os.sched_getaffinity(0)))),
        ("torch threads", str(torch.get_num_threads())),
        ("load average (1, 5, 15 min) at start", loadavg()),
        ("RAM (total / available at start)", f"{_gib('MemTotal')} / {_gib('MemAvailable')}"),
        ("GPU", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU only)"),
        ("OS", platform.platform()),
        ("Python", platform.python_version()),
        *extra,
    ]
    for package in packages:
        try:
            rows.append((package, version(package)))
        except PackageNotFoundError:
            rows.append((package, "not installed"))
    return rows
