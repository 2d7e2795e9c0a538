"""Each config key that picks an implementation lists exactly the implementations registered for it."""

import typing

from models.config import LLMBackend, Mode, RetrieverKind
from models.generate import GENERATOR_BACKENDS
from models.modes import ADAPTED, MODES, RETRIEVING, answer_mode
from rag.retrieve import RETRIEVERS


def test_llm_backend_choices_are_the_registered_engines() -> None:
    assert set(typing.get_args(LLMBackend)) == set(GENERATOR_BACKENDS)


def test_retriever_choices_are_the_registered_retrievers() -> None:
    assert set(typing.get_args(RetrieverKind)) == set(RETRIEVERS)


def test_config_modes_are_the_table_of_answer_modes() -> None:
    assert list(typing.get_args(Mode)) == list(MODES)
    assert RETRIEVING == ("rag", "hybrid") and ADAPTED == ("finetune", "hybrid")
    assert answer_mode("base").retrieves is False and answer_mode("hybrid").adapted is True


def test_an_unknown_mode_names_the_known_ones() -> None:
    import pytest

    from models.errors import ConfigError

    with pytest.raises(ConfigError, match="mode: should be one of base, rag, finetune, hybrid, got 'both'"):
        answer_mode("both")
