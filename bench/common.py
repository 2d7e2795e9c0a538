"""Shared pieces of the benchmarks: a busy-CPU warning and millisecond figures, beside the report pieces
(progress lines, percentiles, Markdown tables, the machine table) they share with compare's report."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ragtune.compare.tables import loadavg, machine_rows, pct, say, table

__all__ = ["busy_note", "cpu_busy", "loadavg", "machine_rows", "ms", "pct", "say", "table", "verdict"]


def verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


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
