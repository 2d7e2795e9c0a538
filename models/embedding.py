"""The embedder as ragtune uses it: token offsets for chunking, and normalised float32 vectors."""

from __future__ import annotations

from typing import Any

import numpy as np


class Embedder:
    def __init__(self, model: Any, name: str, batch_size: int = 64) -> None:
        self.model = model  # a SentenceTransformer
        self.name = name
        self.batch_size = batch_size
        self.dim = int(model.get_embedding_dimension())
        self.max_tokens = int(model.max_seq_length)
        self._tokenizer = model.tokenizer
        # A private copy of the Rust tokenizer with truncation and padding off: the model's own copy
        # truncates to its maximum length, which would silently cut every long document short.
        backend = getattr(model.tokenizer, "backend_tokenizer", None)
        self._backend = None
        if backend is not None:
            from tokenizers import Tokenizer

            self._backend = Tokenizer.from_str(backend.to_str())
            self._backend.no_truncation()
            self._backend.no_padding()

    def close(self) -> None:
        """Release what the embedder holds open (nothing for a local model)."""

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character (start, end) of each token of the whole text, without special tokens."""
        if self._backend is not None:
            return list(self._backend.encode(text, add_special_tokens=False).offsets)
        encoded = self._tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False)
        return list(encoded["offset_mapping"])

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length vectors, so cosine and inner product agree."""
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)
