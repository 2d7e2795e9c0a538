"""Where ragtune keeps data (RAGTUNE_HOME: indexes, adapters, embedders) and materialised models (RAGTUNE_CACHE)."""

from __future__ import annotations

import os
from pathlib import Path

from models.config import Config


def data_home() -> Path:
    """Indexes and adapters live here; point a script elsewhere with RAGTUNE_HOME."""
    return Path(os.environ.get("RAGTUNE_HOME") or Path.home() / ".local" / "share" / "ragtune").expanduser()


def cache_home() -> Path:
    """Materialised models, shared by every data home; RAGTUNE_CACHE moves it."""
    return Path(os.environ.get("RAGTUNE_CACHE") or Path.home() / ".cache" / "ragtune").expanduser()


def index_dir(config: Config) -> Path:
    return data_home() / "indexes" / config.index.name


def adapters_dir() -> Path:
    return data_home() / "adapters"


def embedders_dir() -> Path:
    """Embedders fine-tuned on the user's documents, one folder per name (`ragtune embedders list`)."""
    return data_home() / "embedders"
