"""Compose the layers for one config: embedder + index + LM into an answering pipeline."""

from __future__ import annotations

import logging
import os
import warnings

from models.config import Config
from models.embedding import Embedder, build_embedder
from models.errors import NotBuiltError
from models.generate import HFGenerator
from models.paths import index_dir
from rag.pipeline import RagPipeline, Retriever


def quiet_libraries() -> None:
    """Keep library chatter (weight-loading bars, deprecation notes) out of the user's terminal."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)


def require_mode_built(config: Config) -> None:
    if config.mode != "rag":
        raise NotBuiltError(f"mode={config.mode} is not available in this version yet; use --set mode=rag")


def build_generator(config: Config, progress: bool = True) -> HFGenerator:
    from models.loading import load_lm

    lm = load_lm(config.llm, progress=progress)
    return HFGenerator(lm.model, lm.tokenizer, config.llm.model, config.llm.context_window)


def build_pipeline(
    config: Config, embedder: Embedder | None = None, generator: HFGenerator | None = None, progress: bool = True
) -> RagPipeline:
    require_mode_built(config)
    embedder = embedder or build_embedder(config.embedder)
    retriever = Retriever(index_dir(config), config, embedder)
    retriever.snapshot()  # fail on a missing or corrupt index before spending time loading the LM
    return RagPipeline(config, retriever, generator or build_generator(config, progress))
