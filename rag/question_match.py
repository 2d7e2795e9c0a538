"""How close the retrieved passages come to the question: its best cosine similarity to any one of their sentences.

A passage can share a question's words and still be about something else: a question whose answer is not in
the documents retrieves the nearest chunks there are, and the model answers from them. Whole chunks are a
blunt measure of that (one sentence on the subject among five others); the single closest sentence is not.
On the calibration set of real questions (docs/trust.md) an answer is flagged unless some retrieved sentence
reaches `rag.question_match` with the packaged embedder: the scale is that embedder's, so another embedder
needs its own threshold (or 0, off).
"""

from __future__ import annotations

import numpy as np

from models.embedding import Embedder
from rag.attribution import sentences

DEFAULT_FLOOR = 0.45  # rag.question_match's default, chosen on the calibration set's dev part (docs/trust.md)


def passage_sentences(texts: list[str]) -> list[str]:
    """Every sentence of every text, in order (a text with no sentence ending counts as one)."""
    return [text[start:end] for text in texts for start, end in sentences(text)]


def closest_sentence(embedder: Embedder, vector: np.ndarray, texts: list[str]) -> float:
    """The highest cosine similarity between the question's unit `vector` and a sentence of `texts` (-1: none)."""
    found = passage_sentences(texts)
    if not found:
        return -1.0
    return float(np.max(embedder.encode(found) @ np.asarray(vector, dtype=np.float32)))
