"""Each config key that picks an implementation lists exactly the implementations registered for it."""

import typing

from models.config import LLMBackend, LLMConfig, Mode, RetrieverKind
from models.generate import GENERATOR_BACKENDS, resolve_backend
from models.modes import ADAPTED, MODES, RETRIEVING, answer_mode
from rag.retrieve import RETRIEVERS


def test_llm_backend_choices_are_the_registered_engines() -> None:
    assert set(typing.get_args(LLMBackend)) == set(GENERATOR_BACKENDS)
    # llm.backend takes the engines plus "auto", which resolves to one of them
    accepted = typing.get_args(typing.get_type_hints(LLMConfig)["backend"])
    assert set(accepted) == set(GENERATOR_BACKENDS) | {"auto"}


def test_auto_backend_resolves_to_a_registered_engine() -> None:
    for model in ("qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct", "/models/x.gguf", "/models/hf-folder"):
        assert resolve_backend(LLMConfig(model=model, backend="auto")) in GENERATOR_BACKENDS
    # a Hugging Face folder always runs on transformers; a named engine is kept as named
    assert resolve_backend(LLMConfig(model="/models/hf-folder", backend="auto")) == "transformers"
    assert resolve_backend(LLMConfig(model="/models/x.gguf", backend="transformers")) == "transformers"


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
