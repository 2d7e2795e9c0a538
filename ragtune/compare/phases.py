"""The steps of a compare run as child processes, each recorded once finished so a re-run skips it.

Every heavy step (ingest, synth, train, eval) runs as `python -m ragtune.cli ...` in its own process:
its peak RAM is measured on its own (wait4), its memory is returned when it ends, a crash in one step
cannot corrupt the others, and Ctrl-C reaches it directly. A finished step leaves a record under
OUT/phases/ holding the hash of its inputs; a record whose hash no longer matches is redone.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import IndexCorruptError, RagtuneError
from models.storage import atomic_write_json, atomic_write_text, read_json, sha256_file


class CompareError(RagtuneError):
    """A compare step failed or its inputs cannot work together."""


@dataclass(frozen=True)
class ChildRun:
    seconds: float
    peak_rss_mb: float
    stdout: str


def run_cli(args: list[str], name: str, log_dir: Path) -> ChildRun:
    """`ragtune ARGS` in a child process: its progress bars go to the terminal, its stdout to a log."""
    command = [sys.executable, "-m", "ragtune.cli", *args]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, encoding="utf-8")
    try:
        stdout = process.stdout.read() if process.stdout else ""
        # wait4, not wait: it returns this child's own resource usage, so its peak RAM is its alone.
        _, status, usage = os.wait4(process.pid, 0)
    except BaseException:
        # Ctrl-C reaches the child too (same process group); give it time to stop cleanly, then make sure.
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    atomic_write_text(log_dir / f"{name}.log", f"$ ragtune {' '.join(args)}\n{stdout}")
    if process.returncode != 0:
        raise CompareError(
            f"step {name} failed (exit {process.returncode}) running `ragtune {' '.join(args)}`; its error is "
            f"printed above and its output is in {log_dir / (name + '.log')}. Fix it and re-run compare: "
            "finished steps are kept"
        )
    return ChildRun(seconds=seconds, peak_rss_mb=usage.ru_maxrss / 1024, stdout=stdout)


def digest(*parts: Any) -> str:
    """A stable hash of JSON-able inputs (configs, file hashes, names)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def tree_digest(folder: Path) -> str:
    """Hash of every file's relative path and content under `folder`: the identity of a document set."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return digest([(str(p.relative_to(folder)), sha256_file(p)) for p in files])


class PhaseLog:
    """OUT/phases/NAME.json: what a finished step measured, valid while its input hash is unchanged."""

    def __init__(self, out: Path) -> None:
        self.folder = out / "phases"

    def _path(self, name: str) -> Path:
        return self.folder / f"{name.replace(':', '-')}.json"

    def get(self, name: str, key: str) -> dict[str, Any] | None:
        """The record of a finished step with these inputs; a damaged record only means "run it again"."""
        path = self._path(name)
        if not path.is_file():
            return None
        try:
            record = read_json(path, "compare phase record")
        except IndexCorruptError:
            return None
        return record if isinstance(record, dict) and record.get("key") == key else None

    def put(self, name: str, key: str, record: dict[str, Any]) -> dict[str, Any]:
        record = {**record, "key": key, "finished_at": time.time()}
        atomic_write_json(self._path(name), record)
        return record
