"""The one typed config: frozen dataclasses, one module per section group, loaded from YAML plus overrides."""

from models.config.choices import IndexBackend, LLMBackend, Mode, RetrieverKind
from models.config.finetune import EmbedderTuningConfig, FinetuneConfig, LoraConfig
from models.config.llm import EmbedderConfig, LLMConfig
from models.config.loading import apply_overrides, load_config, to_dict, to_yaml
from models.config.retrieval import HybridConfig, IndexConfig, RagConfig, RerankConfig
from models.config.root import Config
from models.config.serve import EvalConfig, JudgeConfig, ServeConfig

__all__ = [
    "Config",
    "EmbedderConfig",
    "EvalConfig",
    "FinetuneConfig",
    "HybridConfig",
    "IndexBackend",
    "IndexConfig",
    "JudgeConfig",
    "LLMBackend",
    "LLMConfig",
    "LoraConfig",
    "EmbedderTuningConfig",
    "Mode",
    "RagConfig",
    "RerankConfig",
    "RetrieverKind",
    "ServeConfig",
    "apply_overrides",
    "load_config",
    "to_dict",
    "to_yaml",
]
