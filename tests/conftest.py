"""Shared fixtures: an isolated RAGTUNE_HOME per test, one tiny LM and one real embedder per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def ragtune_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("RAGTUNE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_lm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def embedder():
    from models.config import EmbedderConfig
    from models.embedders import build_embedder

    return build_embedder(EmbedderConfig())


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    """A writable copy of the shipped example documents."""
    target = tmp_path / "docs"
    shutil.copytree(EXAMPLES / "docs", target)
    return target


@pytest.fixture
def tiny_config(tiny_lm_path: Path):
    from models.config import load_config

    return load_config(None, [f"llm.model={tiny_lm_path}", "llm.max_new_tokens=8", "llm.dtype=float32"])


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-long", action="store_true", help="run the fuzz suites with thousands of cases instead of hundreds"
    )


@pytest.fixture(scope="session")
def fuzz_cases(request: pytest.FixtureRequest) -> int:
    """How many seeded mutations a fuzz test makes: a few hundred by default, thousands with --fuzz-long."""
    return 3000 if request.config.getoption("--fuzz-long") else 300
