"""Shared pieces of the benchmark scripts and compare's report: the machine table, a busy-CPU warning,
percentiles, Markdown tables."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np


def say(text: str) -> None:
    print(text, flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def table(header: str, rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; `header` names the columns as "a | b | c"."""
    lines = [f"| {header} |", "|" + "---|" * (header.count("|") + 1)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def loadavg() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Share of all CPUs busy over `seconds`, from /proc/stat (this process sleeps meanwhile); None if unknown."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0].split()[1:]]
        return sum(fields[:8]), fields[3] + fields[4]  # user..steal, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def busy_note() -> str:
    """A warning when other processes already use the CPU: torch's threads then fight theirs for the cores.

    Seen on a 2-core machine beside one other training process: the same 2-step LoRA run measured 1.9 and
    42.9 s/step minutes apart. The load average lags (it still shows a job that just ended), so the check
    is the CPU time used by others during one second before the benchmark starts.
    """
    busy, cores = cpu_busy(), len(os.sched_getaffinity(0))
    if busy is None or busy < 0.25:
        return ""
    return (
        f"other processes kept {busy:.0%} of the CPU busy just before the benchmark started ({cores} usable cores): "
        "the timings below can be several times too slow and vary from run to run"
    )


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
