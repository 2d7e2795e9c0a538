"""rag.question_match's model: the chance that the retrieved passages answer the question at all."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rag.question_match import DEFAULT_FLOOR, MODEL, QuestionModel, answerable_chance


class WordEmbedder:
    """Unit vectors from word overlap, enough to rank sentences by closeness to a question."""

    def __init__(self, vocabulary: list[str]) -> None:
        self.vocabulary = vocabulary

    def encode(self, texts: list[str]) -> np.ndarray:
        rows = np.array([[float(w in t.lower()) for w in self.vocabulary] for t in texts], dtype=np.float32)
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-9)


def test_the_chance_is_the_logistic_of_the_weighted_signals() -> None:
    model = QuestionModel(intercept=-1.0, closest=2.0, named=0.5, held=1.0)
    assert model.chance(0.5, True, 0.5) == 1 / (1 + math.exp(-(-1.0 + 1.0 + 0.5 + 0.5)))
    assert model.chance(0.5, False, 0.5) < model.chance(0.5, True, 0.5)


def test_the_shipped_model_rises_with_each_signal_and_its_floor_splits_a_near_passage_from_a_far_one() -> None:
    assert MODEL.closest > 0 and MODEL.named > 0 and MODEL.held > 0  # each signal counts for the passages
    assert MODEL.chance(0.3, False, 0.2) < DEFAULT_FLOOR < MODEL.chance(0.6, True, 0.8)


def test_answerable_chance_reads_the_closest_sentence_and_the_terms_held() -> None:
    embedder = WordEmbedder(["tesla", "born", "edison", "died", "paris"])
    question = "When was Tesla born?"
    vector = embedder.encode([question])[0]
    model = QuestionModel(intercept=-3.0, closest=4.0, named=1.0, held=1.0)
    near = answerable_chance(embedder, vector, question, ["Paris is large. Tesla was born in 1856."], model)
    assert near == pytest.approx(model.chance(1.0, True, 1.0))  # the second sentence holds the question's two words
    far = answerable_chance(embedder, vector, question, ["Edison died in 1931."], model)
    assert far == pytest.approx(model.chance(0.0, False, 0.0)) and far < near
    assert answerable_chance(embedder, vector, question, [], model) == 0.0
