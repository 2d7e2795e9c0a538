"""Do the retrieved passages answer the question at all? A chance from three signals the answer does not need.

A question whose answer is not in the documents still retrieves the nearest chunks there are, and the model
answers from them. Three signals tell such passages from the right ones: the closest of their sentences to the
question in meaning (the embedder's cosine similarity: whole chunks are a blunt measure, one sentence on the
subject among five others), whether they hold the question's names and numbers, and the share of its key
terms they hold (rag.attribution.coverage). A logistic model weighs them into the chance that the passages
answer the question; an answer is `unsupported` when that chance is below `rag.question_match` (0: not
checked). The weights were fitted on the dev part of a calibration set of real questions with the packaged
embedder (bench/support_questions.py, docs/trust.md): the similarity's scale is that embedder's, so with
another one calibrate the floor on your own questions (`eval`) or set 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.embedding import Embedder
from rag.attribution import coverage, sentences


@dataclass(frozen=True)
class QuestionModel:
    """Log-odds that the passages answer the question: an intercept plus a weight per signal."""

    intercept: float
    closest: float  # per unit of the closest sentence's cosine similarity
    named: float  # when every name and number of the question is held
    held: float  # per unit of the share of key terms held

    def chance(self, closest: float, named: bool, held: float) -> float:
        odds = self.intercept + self.closest * closest + self.named * float(named) + self.held * held
        return 1 / (1 + math.exp(-odds))


# Fitted by `python scripts/bench_support_questions.py` on the calibration set's dev questions (docs/trust.md).
MODEL = QuestionModel(intercept=-13.78, closest=17.71, named=2.19, held=2.93)
# rag.question_match's default: the chance below which at most 3.7% of the answerable dev questions fall (the 5%
# false-refusal target less the model's own refusals there).
DEFAULT_FLOOR = 0.25


def answerable_chance(
    embedder: Embedder, vector: np.ndarray, question: str, texts: list[str], model: QuestionModel = MODEL
) -> float:
    """The chance that `texts` answer `question` (its unit `vector` from `embedder`); 0 with no text."""
    if not texts:
        return 0.0
    return chance_given(question, texts, closest_sentence(embedder, vector, texts), model)


def chance_given(question: str, texts: list[str], closest: float, model: QuestionModel = MODEL) -> float:
    """The same chance with the closest sentence's similarity already worked out (0 with no text)."""
    if not texts:
        return 0.0
    named, held = coverage(question, list(enumerate(texts, 1)))
    return model.chance(closest, named, held)


def passage_sentences(texts: list[str]) -> list[str]:
    """Every sentence of every text, in order (a text with no sentence ending counts as one)."""
    return [text[start:end] for text in texts for start, end in sentences(text)]


def closest_sentence(embedder: Embedder, vector: np.ndarray, texts: list[str]) -> float:
    """The highest cosine similarity between the question's unit `vector` and a sentence of `texts` (-1: none)."""
    similarities = sentence_similarities(embedder, vector, texts)
    return float(similarities.max()) if similarities.size else -1.0


def sentence_similarities(embedder: Embedder, vector: np.ndarray, texts: list[str]) -> np.ndarray:
    """The cosine similarity of each sentence of `texts`, in order, to the question's unit `vector`."""
    found = passage_sentences(texts)
    if not found:
        return np.zeros(0, dtype=np.float32)
    return embedder.encode(found) @ np.asarray(vector, dtype=np.float32)
