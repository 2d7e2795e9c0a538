"""Compose the layers for one config: embedder + retriever + LM (+ adapter) into the mode's Answerer."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from models.answer import Answerer
from models.config import Config
from models.embedders import build_embedder
from models.embedding import Embedder
from models.errors import ConfigError
from models.generate import AdapterRef, Generator, load_language_model
from models.modes import answer_mode
from models.paths import index_dir
from models.presets import PRESETS
from rag.pipeline import RagAnswerer
from rag.retrieve import build_retriever
from ragtune.closed_book import ClosedBookAnswerer


def quiet_libraries() -> None:
    """Keep library chatter (weight-loading bars, deprecation notes) out of the user's terminal."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    # Installed for QLoRA, bitsandbytes is imported by peft on every adapter load and warns, offline, that
    # it cannot fetch an optional CPU kernel; its built-in one is used.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def require_adapter(config: Config) -> None:
    """In the adapted modes, a named, intact adapter must exist before anything heavy loads."""
    from finetune.adapters import read_adapter

    if not answer_mode(config.mode).adapted:
        return
    if not config.finetune.adapter:
        raise ConfigError(
            f"mode={config.mode} needs finetune.adapter=NAME; see `ragtune adapters list`, "
            "or train one with `ragtune train`"
        )
    read_adapter(config.finetune.adapter)


def build_generator(config: Config, progress: bool = True) -> Generator:
    """The configured LM, wrapped with `finetune.adapter` in the adapted modes (finetune, hybrid).

    An engine that runs the GGUF as it is (llama.cpp: its `path` is the .gguf file) gets the adapter's GGUF
    LoRA, which the adapter holds from training or from `ragtune adapters prepare` (answering only reads it).
    """
    from finetune.adapters import usable_adapter

    require_adapter(config)
    lm = load_language_model(config.llm, progress=progress)
    if not answer_mode(config.mode).adapted:
        return lm.generator()
    info = usable_adapter(config.finetune.adapter, lm.path, pinned_gguf_sha256(config, lm.path))
    lm.load_adapter(AdapterRef(info.name, info.path))
    return lm.generator(info.name)


def pinned_gguf_sha256(config: Config, path: Path) -> str | None:
    """A GGUF preset run as it is was checked against its pinned sha256 when it was prepared: reuse the pin
    instead of hashing a GB again. None otherwise (the base is then fingerprinted as usual)."""
    preset = PRESETS.get(config.llm.model)
    if preset is None or preset.kind != "gguf" or Path(path).suffix != ".gguf":
        return None
    return preset.sha256


def build_answerer(
    config: Config, embedder: Embedder | None = None, generator: Generator | None = None, progress: bool = True
) -> Answerer:
    """Retrieving modes: retrieval + LM; the others: the (adapted) LM alone. All answer with the same shape."""
    require_adapter(config)
    if not answer_mode(config.mode).retrieves:
        return ClosedBookAnswerer(config, generator or build_generator(config, progress))
    embedder = embedder or build_embedder(config.embedder)
    retriever = build_retriever(index_dir(config), config, embedder)
    retriever.check()  # fail on a missing or corrupt index before spending time loading the LM
    return RagAnswerer(config, retriever, generator or build_generator(config, progress))
