"""A second `ragtune serve`, in its own process on a loopback port, over the tiny LM: the real OpenAI-compatible
server that llm.backend=openai is tested against (it serves `base`, `rag` and `finetune:NAME`)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from models.config import LLMConfig

REPO = Path(__file__).resolve().parents[1]
KEY = "remote-test-key-" + "y" * 24


@dataclass
class ServedRagtune:
    url: str  # http://127.0.0.1:PORT
    key_file: Path
    home: Path  # the server's RAGTUNE_HOME
    base: Path  # the tiny LM it serves

    def llm(self, config: LLMConfig | None = None, **keys: Any) -> LLMConfig:
        """`config` (default: the tiny LM's) pointed at this server's `base` model."""
        config = config or LLMConfig(model=str(self.base), dtype="float32", context_window=512)
        remote = {"base_url": f"{self.url}/v1", "api_key_file": str(self.key_file), "served_model": "base"}
        return replace(config, backend="openai", **{**remote, **keys})

    def add_adapter(self, name: str, peft_folder: Path) -> None:
        """Put a PEFT adapter into the server's store, with the manifest `ragtune serve` checks before offering it."""
        from finetune.adapters import MANIFEST, base_fingerprint
        from models.storage import atomic_write_json, describe_files

        target = self.home / "adapters" / name
        staging = target.with_name(f".{name}.staging")
        shutil.copytree(peft_folder, staging, ignore=shutil.ignore_patterns(MANIFEST))  # a manifest is made below
        names = sorted(p.name for p in staging.iterdir() if p.is_file())
        manifest = {
            "name": name,
            "method": "lora",
            "base_model": str(self.base),
            "base_fingerprint": base_fingerprint(self.base),
            "metrics": {},
            "files": describe_files(staging, names),
        }
        atomic_write_json(staging / MANIFEST, manifest)
        staging.rename(target)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served_ragtune(base: Path, folder: Path, *overrides: str, timeout: float = 180) -> Iterator[ServedRagtune]:
    """Run `ragtune serve` over `base` in a subprocess (its home under `folder`) until the block ends."""
    home, key_file, port = folder / "home", folder / "api-key", free_port()
    key_file.write_text(KEY)
    settings = [f"llm.model={base}", "llm.dtype=float32", "llm.device=cpu", "llm.threads=1", *overrides]
    command = [sys.executable, "-m", "ragtune.cli", "serve", "--port", str(port), "--api-key-file", str(key_file)]
    command += [arg for s in settings for arg in ("--set", s)]
    env = {**os.environ, "RAGTUNE_HOME": str(home), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    log = open(folder / "serve.log", "w+")  # noqa: SIM115 (closed below; its text explains a failed start)
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, folder / "serve.log", timeout)
        yield ServedRagtune(url, key_file, home, base)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ragtune serve exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"ragtune serve did not answer /health within {timeout} s: {log.read_text()[-2000:]}")
