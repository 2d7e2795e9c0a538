"""The reranking stage: a local sentence-transformers cross-encoder rescoring (question, chunk) pairs.

A cross-encoder reads the question and a chunk together, so it judges relevance better than comparing
two separately made vectors, at the cost of one forward pass per candidate: it only reorders the first
stage's best `rag.rerank.candidates`. The folder is checked before torch reads it: an embedder folder
would otherwise load with a randomly initialised head and rerank by noise, silently.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from models.config import RerankConfig
from models.errors import ConfigError, ModelError

_KEY = "rag.rerank.model"


class Reranker:
    def __init__(self, model, name: str) -> None:
        self.model, self.name = model, name  # a sentence_transformers CrossEncoder

    def score(self, question: str, passages: list[str]) -> np.ndarray:
        """One relevance score per passage, higher is more relevant."""
        if not passages:
            return np.empty(0, dtype=np.float32)
        pairs = [(question, passage) for passage in passages]
        scores = self.model.predict(pairs, batch_size=32, show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(scores, dtype=np.float32).reshape(len(passages), -1)[:, 0]


def check_cross_encoder(model: str) -> Path:
    """The folder `rag.rerank.model` names, once it looks like a cross-encoder with safetensors weights."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{_KEY}={model!r}: no such folder; give a local cross-encoder folder, or null to turn off")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        architectures = [str(name) for name in config.get("architectures") or []]
    except (OSError, ValueError, AttributeError):
        raise ModelError(f"{_KEY}={model!r}: {folder} has no readable config.json; it is not a cross-encoder") from None
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise ModelError(
            f"{_KEY}={model!r}: {folder} is not a cross-encoder (its config.json names "
            f"{', '.join(architectures) or 'no architecture'}, not a ...ForSequenceClassification model); "
            "an embedder folder cannot rerank"
        )
    kind = _sentence_transformers_type(folder)
    if kind not in (None, "CrossEncoder"):
        raise ModelError(f"{_KEY}={model!r}: {folder} is a sentence-transformers {kind}, not a CrossEncoder")
    if not list(folder.glob("*.safetensors")):
        raise ModelError(
            f"{_KEY}={model!r}: {folder} holds no .safetensors weights; pickled weights are not loaded "
            "(convert them with safetensors first)"
        )
    return folder


def load_reranker(config: RerankConfig) -> Reranker:
    """The cross-encoder of `rag.rerank.model`, read from disk only (no hub, no remote code)."""
    from models.device import resolve_device

    assert config.model is not None, "load_reranker with reranking off"
    folder = check_cross_encoder(config.model)
    device = resolve_device(config.device, "rag.rerank.device")
    try:
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(str(folder), device=device, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"{_KEY}={config.model!r}: cannot load {folder}: {' '.join(str(exc).split())[:300]}") from None
    return Reranker(model, config.model)


def _sentence_transformers_type(folder: Path) -> str | None:
    try:
        saved = json.loads((folder / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None  # a plain Hugging Face folder: CrossEncoder reads it as one
    except (OSError, ValueError):
        raise ModelError(f"{_KEY}: {folder / 'config_sentence_transformers.json'} is unreadable") from None
    return saved.get("model_type") if isinstance(saved, dict) else None
