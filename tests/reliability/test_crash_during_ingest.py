"""kill -9 at any moment of an ingest leaves the old generation or the new one, never a broken index."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.config import load_config
from models.paths import index_dir
from rag.collection import current_generation, expectation, open_snapshot
from rag.ingest import ingest
from tests.conftest import REPO

INGEST = (
    "import sys; from models.config import load_config; from models.embedders import build_embedder; "
    "from rag.ingest import ingest; c = load_config(); "
    "ingest([sys.argv[1]], c, build_embedder(c.embedder), progress=False)"
)


SMALL, BIG = 3, 80  # BIG: several seconds of embedding, so the last kill (2.5 s in) still lands mid-run


def write_corpus(folder: Path, files: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        sentences = " ".join(
            f"Item {i} note {j}: the branch {j % 7} stocks {i * j} copies of title {j}." for j in range(40)
        )
        (folder / f"doc{i:04d}.txt").write_text(sentences)


def start_ingest(folder: Path, home: Path) -> subprocess.Popen:
    env = {**os.environ, "RAGTUNE_HOME": str(home), "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", INGEST, str(folder)],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_for_staging(root: Path, process: subprocess.Popen, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if list(root.glob(".gen.*.partial")):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_kill_9_during_ingest_never_breaks_the_index(tmp_path: Path, ragtune_home: Path, embedder) -> None:
    config = load_config()
    small, big = tmp_path / "small", tmp_path / "big"
    write_corpus(small, SMALL)
    first = ingest([small], config, embedder, progress=False)
    root = index_dir(config)
    expect = expectation(config, embedder.dim)
    write_corpus(big, BIG)
    outcomes = []
    for delay in (0.0, 0.4, 1.2, 2.5):
        process = start_ingest(big, ragtune_home)
        assert wait_for_staging(root, process), process.stderr.read().decode()
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        snapshot = open_snapshot(root, expect)  # verifies sizes, hashes, header and counts
        outcomes.append(snapshot.index.count)
        snapshot.close()
    # The interrupted runs left staging folders and no lock: the next ingest cleans up and completes.
    final = ingest([big], config, embedder, progress=False)
    assert final.generation is not None and not list(root.glob(".gen.*.partial"))
    snapshot = open_snapshot(root, expect)
    assert snapshot.index.count == final.total_chunks and len(snapshot.store.documents()) == SMALL + BIG
    assert current_generation(root) == final.generation
    # After each kill the index held exactly the old generation or the complete new one.
    assert set(outcomes) <= {first.total_chunks, final.total_chunks}, outcomes
