"""The whole config: the answer mode and one section per top-level YAML key."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.config.choices import Mode
from models.config.finetune import FinetuneConfig
from models.config.llm import EmbedderConfig, LLMConfig
from models.config.retrieval import IndexConfig, RagConfig
from models.config.serve import EvalConfig, ServeConfig


@dataclass(frozen=True)
class Config:
    # base: the LM alone; rag: retrieve then answer; finetune: adapted model, no retrieval; hybrid: both.
    mode: Mode = "rag"
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    rag: RagConfig = field(default_factory=RagConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
