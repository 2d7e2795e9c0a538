"""The real packaged defaults (MiniLM embedder, Qwen2.5-Coder-0.5B LM) on the shipped examples."""

import json
from pathlib import Path

import pytest

from models.answer import answer as answer_with
from models.config import load_config
from rag.ingest import ingest
from ragtune.compose import build_answerer
from tests.conftest import EXAMPLES

QUESTIONS = [json.loads(line) for line in (EXAMPLES / "questions.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_default_models_answer_the_example_questions_from_the_right_source(docs: Path, embedder) -> None:
    config = load_config(None, ["llm.max_new_tokens=64"])
    ingest([docs], config, embedder)
    answerer = build_answerer(config, embedder=embedder, progress=False)
    failures = []
    for item in QUESTIONS:
        answer = answer_with(answerer, item["question"])
        right_fact = any(accepted.lower() in answer.text.lower() for accepted in item["answers"])
        right_source = Path(answer.sources[0].path).name == item["doc"] if answer.sources else False
        if not (right_fact and right_source):
            failures.append((item["question"], answer.text, [Path(s.path).name for s in answer.sources]))
    assert not failures, failures
