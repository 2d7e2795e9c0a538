"""The embedder as ragtune uses it: token offsets for chunking, and normalised float32 vectors."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.config import EmbedderConfig


class Embedder:
    def __init__(self, model: Any, name: str, batch_size: int = 64) -> None:
        self.model = model  # a SentenceTransformer
        self.name = name
        self.batch_size = batch_size
        self.dim = int(model.get_embedding_dimension())
        self.max_tokens = int(model.max_seq_length)
        self._tokenizer = model.tokenizer

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character (start, end) of each token, without special tokens or a length limit."""
        backend = getattr(self._tokenizer, "backend_tokenizer", None)
        if backend is not None:  # the Rust tokenizer: no "sequence too long" warning, no truncation
            return list(backend.encode(text, add_special_tokens=False).offsets)
        encoded = self._tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(encoded["offset_mapping"])

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length vectors, so cosine and inner product agree."""
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


def build_embedder(config: EmbedderConfig) -> Embedder:
    from models.loading import load_embedder

    return Embedder(load_embedder(config), config.model, config.batch_size)
