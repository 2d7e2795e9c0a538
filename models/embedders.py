"""The embedder embedder.backend names: torch or onnx (embedder.model, here), openai (a server, checked against it)."""

from __future__ import annotations

from models.config import EmbedderConfig
from models.embedding import Embedder


def build_embedder(config: EmbedderConfig) -> Embedder:
    if config.backend == "openai":
        from models.remote_embedding import RemoteEmbedder

        return RemoteEmbedder(config)
    if config.backend == "onnx":
        from models.onnx_embedding import load_onnx_embedder

        return Embedder(load_onnx_embedder(config), config.model, config.batch_size)
    from models.loading import load_embedder

    return Embedder(load_embedder(config), config.model, config.batch_size)
