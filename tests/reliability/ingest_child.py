"""Ingest a folder in a child process and read back what it reported: its own peak memory and reads included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import REPO

SCRIPT = """
import json, sys
from models.config import load_config
from models.embedders import build_embedder
from rag.ingest import ingest
def status(field, source):  # a figure this process reports about itself
    return next(int(line.split()[1]) for line in open(source) if line.startswith(field))
config = load_config(None, sys.argv[2:])
embedder = build_embedder(config.embedder)
before = status("rchar:", "/proc/self/io")
summary = ingest([sys.argv[1]], config, embedder, progress=False)
print(json.dumps({
    "added": summary.added,
    "skipped": summary.skipped,
    "seconds": summary.seconds,
    # VmHWM: this process's own peak; ru_maxrss would also count the parent it was forked from.
    "peak_mb": status("VmHWM:", "/proc/self/status") / 1024,
    "read_mb": (status("rchar:", "/proc/self/io") - before) / 1e6,  # bytes read by the ingest, files and all
}))
"""


def ingest_in_child(docs: Path, home: Path, *overrides: str) -> dict[str, Any]:
    """What `ingest` of `docs` under RAGTUNE_HOME=`home` reported, with `key=value` config overrides."""
    env = {**os.environ, "RAGTUNE_HOME": str(home), "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(docs), *overrides],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])
