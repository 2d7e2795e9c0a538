"""The names a choice key takes (modes, engines, index backends, retrievers) and the check every section runs."""

from __future__ import annotations

from typing import Literal

from models.errors import ConfigError

# The answer modes; models/modes.py says what each one needs (a unit test keeps the two in step).
Mode = Literal["base", "rag", "finetune", "hybrid"]
# Each name is a module behind an interface, chosen by these keys: models/generate.py GENERATOR_BACKENDS,
# rag/index/__init__.py INDEX_BACKENDS and rag/retrieve.py RETRIEVERS (a unit test keeps them in step).
# llm.backend also accepts "auto" (models/generate.py resolve_backend picks one of the engines).
LLMBackend = Literal["transformers", "llamacpp", "openai"]
IndexBackend = Literal["hnswlib", "milvus"]
RetrieverKind = Literal["dense", "lexical", "hybrid"]
# How an answer that cites nothing gets its [n] (rag/pipeline.py).
Citation = Literal["attribution", "likelihood"]


def check(ok: bool, key: str, message: str) -> None:
    """Raise a ConfigError naming the dotted `key` unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}: {message}")
