"""Compose the layers for one config: embedder + index + LM (+ adapter) into an answering pipeline."""

from __future__ import annotations

import logging
import os
import warnings

from models.config import Config
from models.embedding import Embedder, build_embedder
from models.errors import ConfigError
from models.generate import HFGenerator
from models.paths import index_dir
from rag.pipeline import RagPipeline, Retriever
from ragtune.closed_book import ClosedBookPipeline


def quiet_libraries() -> None:
    """Keep library chatter (weight-loading bars, deprecation notes) out of the user's terminal."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)


def uses_adapter(config: Config) -> bool:
    return config.mode in ("finetune", "hybrid")


def require_adapter(config: Config) -> None:
    """In the finetune and hybrid modes, a named, intact adapter must exist before anything heavy loads."""
    from finetune.adapters import read_adapter

    if not uses_adapter(config):
        return
    if not config.finetune.adapter:
        raise ConfigError(
            f"mode={config.mode} needs finetune.adapter=NAME; see `ragtune adapters list`, "
            "or train one with `ragtune train`"
        )
    read_adapter(config.finetune.adapter)


def build_generator(config: Config, progress: bool = True) -> HFGenerator:
    """The configured LM, wrapped with `finetune.adapter` in the finetune and hybrid modes."""
    from finetune.adapters import apply_adapter
    from models.loading import load_lm

    require_adapter(config)
    lm = load_lm(config.llm, progress=progress)
    if not uses_adapter(config):
        return HFGenerator(lm.model, lm.tokenizer, config.llm.model, config.llm.context_window)
    model = apply_adapter(lm.model, lm.path, config.finetune.adapter).eval()
    name = f"{config.llm.model}+{config.finetune.adapter}"
    return HFGenerator(model, lm.tokenizer, name, config.llm.context_window)


def build_pipeline(
    config: Config, embedder: Embedder | None = None, generator: HFGenerator | None = None, progress: bool = True
) -> RagPipeline | ClosedBookPipeline:
    """rag and hybrid: retrieval + LM; finetune: the adapted LM alone. All answer with the same shape."""
    require_adapter(config)
    if config.mode == "finetune":
        return ClosedBookPipeline(config, generator or build_generator(config, progress))
    embedder = embedder or build_embedder(config.embedder)
    retriever = Retriever(index_dir(config), config, embedder)
    retriever.snapshot()  # fail on a missing or corrupt index before spending time loading the LM
    return RagPipeline(config, retriever, generator or build_generator(config, progress))
