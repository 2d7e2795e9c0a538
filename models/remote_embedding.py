"""Embeddings from an OpenAI-compatible `/v1/embeddings` server (embedder.backend=openai), cut and checked here.

embedder.model stays the local model: its tokenizer cuts the chunks and its name is the index's embedder, so an
index built through a server and one built locally are interchangeable. That holds only if the server runs the
same model, so before the first request the server's embedding of a probe sentence must have the local model's
dimension and point the same way as the local model's own embedding of it (cosine >= MIN_PROBE_COSINE).

The local weights are loaded once, on the CPU, when the embedder is built: the probe's local vector needs them,
and the same load gives the tokenizer, dimension and length limit exactly as embedder.backend=torch gets them.
Only the tokenizer and that one vector are kept; the weights are freed at once.
"""

from __future__ import annotations

import base64
import binascii
import gc
import logging
import threading
from dataclasses import replace
from typing import Any

import numpy as np

from models.config import EmbedderConfig
from models.embedding import Embedder
from models.engines.openai_http import RemoteServer
from models.errors import ModelError, RemoteModelError

log = logging.getLogger("ragtune.remote")
PROBE = "The library opens at nine on weekdays; ragtune checks that the server embeds this as embedder.model does."
MIN_PROBE_COSINE = 0.99  # the same model on other hardware or precision agrees to ~0.9999; another model far less


class RemoteEmbedder(Embedder):
    """`Embedder` whose vectors come from embedder.base_url; token offsets, dim and max_tokens stay local."""

    def __init__(self, config: EmbedderConfig) -> None:
        from models.loading import load_embedder

        local = load_embedder(replace(config, device="cpu"))  # one sentence: the CPU is enough
        super().__init__(local, config.model, config.batch_size)
        self._probe = super().encode([PROBE])[0]
        self.model = None
        del local
        gc.collect()  # the weights: the server computes every vector from here on
        self.served_model = config.served_model or config.model
        self.server = RemoteServer(config, "embedder", retry_connect=True)
        self._encoding = "base64"  # packed float32: a third of the bytes of a JSON float list
        self._requested = config.batch_size  # lowered when the server refuses batches that large
        self._checked = False
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length vectors in input order, requested embedder.batch_size texts at a time."""
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        self.check()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        start = 0
        while start < len(texts):
            batch = texts[start : start + self._requested]
            try:
                answer = self._post(batch)
            except RemoteModelError:
                raise
            except ModelError as exc:  # 400/413/422: TEI and others cap inputs per request below ours
                if len(batch) == 1:
                    raise
                self._requested = max(1, len(batch) // 2)
                label, asked = self.server.label, len(batch)
                log.warning("%s refused %d inputs at once (%s); sending %d", label, asked, exc, self._requested)
                continue
            out[start : start + len(batch)] = self._vectors(answer, len(batch))
            start += len(batch)
        return out

    def check(self) -> None:
        """Once: the server must embed the probe sentence as embedder.model does (dimension, then direction)."""
        with self._lock:
            if self._checked:
                return
            try:
                answer = self._post([PROBE])
            except RemoteModelError:
                raise
            except ModelError:  # a server that refuses base64 (or the name): try plain floats before giving up
                self._encoding = "float"
                try:
                    answer = self._post([PROBE])
                except RemoteModelError:
                    raise
                except ModelError as exc:
                    raise ModelError(
                        f"{exc}; check that embedder.served_model ({self.served_model!r}) is a model the server serves"
                    ) from None
            vector = self._vectors(answer, 1)[0]
            cosine = float(vector @ self._probe)
            if cosine < MIN_PROBE_COSINE:
                raise ModelError(
                    f"{self.server.label} serves {self.served_model!r} with other vectors than embedder.model "
                    f"{self.name!r} (cosine {cosine:.3f} on a probe sentence, {MIN_PROBE_COSINE} needed): set "
                    f"embedder.served_model to the server's name for {self.name}, or run that model on the server"
                )
            self._checked = True

    def close(self) -> None:
        """Close the HTTP client; encode() fails afterwards."""
        self.server.close()

    def _post(self, batch: list[str]) -> dict[str, Any]:
        body = {"model": self.served_model, "input": batch, "encoding_format": self._encoding}
        return self.server.post("/embeddings", body)

    def _vectors(self, answer: dict[str, Any], count: int) -> np.ndarray:
        """The answer's `data` as unit float32 rows sorted by `index`; anything else is a RemoteModelError."""
        try:
            rows = {int(item["index"]): _floats(item["embedding"]) for item in answer["data"]}
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise RemoteModelError(
                f"{self.server.label} answered POST /embeddings with something other than an OpenAI embeddings "
                f"list ({type(exc).__name__}: {str(exc)[:80]}); check that it is an OpenAI-compatible server"
            ) from None
        if sorted(rows) != list(range(count)):
            raise RemoteModelError(
                f"{self.server.label} answered {len(rows)} embeddings (indices {sorted(rows)[:8]}) for {count} "
                "inputs; check the server"
            )
        sizes = {len(v) for v in rows.values()}
        if sizes != {self.dim}:
            raise ModelError(
                f"{self.server.label} serves {self.served_model!r} with {', '.join(map(str, sorted(sizes)))}-"
                f"dimensional vectors but embedder.model {self.name!r} has {self.dim}: set embedder.served_model "
                f"to the server's name for {self.name}"
            )
        vectors = np.stack([rows[i] for i in range(count)])
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not np.all(np.isfinite(norms)) or np.any(norms == 0):
            raise RemoteModelError(f"{self.server.label} answered zero, NaN or infinite vectors; check the server")
        return (vectors / norms).astype(np.float32)  # re-normalised: not every server normalises


def _floats(embedding: Any) -> np.ndarray:
    """One embedding as float32: base64 of little-endian float32 (OpenAI's packing), or a list of numbers."""
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding, validate=True), dtype="<f4").astype(np.float32)
    if not isinstance(embedding, list) or not all(isinstance(x, (int, float)) for x in embedding):
        raise TypeError("an embedding is neither a list of numbers nor base64")
    return np.asarray(embedding, dtype=np.float32)
