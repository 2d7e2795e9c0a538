"""embedder.backend and its openai and onnx keys: defaults, checks naming the dotted key, YAML/`--set` loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.config import EmbedderConfig, load_config
from models.errors import ConfigError

REMOTE = ["embedder.backend=openai", "embedder.base_url=http://gpu-box:8080/v1"]


def test_the_default_is_the_local_model_with_the_llm_defaults_for_the_server_keys() -> None:
    config = EmbedderConfig()
    assert config.backend == "torch" and config.base_url is None and config.api_key_file is None
    assert config.served_model is None
    assert (config.connect_timeout, config.read_timeout, config.max_retries) == (5.0, 120.0, 3)


def test_openai_loads_from_overrides_and_keeps_the_local_model() -> None:
    config = load_config(None, [*REMOTE, "embedder.served_model=all-MiniLM-L6-v2", "embedder.read_timeout=30"])
    embedder = config.embedder
    assert embedder.backend == "openai" and embedder.base_url == "http://gpu-box:8080/v1"
    assert embedder.model == "minilm-l6" and embedder.served_model == "all-MiniLM-L6-v2"
    assert embedder.read_timeout == 30.0 and type(embedder.read_timeout) is float


def test_openai_loads_from_a_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("embedder:\n  backend: openai\n  base_url: https://embed.example/v1\n  max_retries: 0\n")
    embedder = load_config(path).embedder
    assert (embedder.backend, embedder.base_url, embedder.max_retries) == ("openai", "https://embed.example/v1", 0)


def test_openai_without_an_address_names_embedder_base_url() -> None:
    with pytest.raises(ConfigError, match=r"^embedder.base_url: embedder.backend=openai needs the server's address"):
        load_config(None, ["embedder.backend=openai"])


def test_an_unknown_backend_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"embedder.backend .*'tei'"):
        load_config(None, ["embedder.backend=tei"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("embedder.base_url=gpu-box:8080", r"embedder.base_url: should start with http:// or https://, got 'gpu-box"),
        ("embedder.served_model=' '", r"embedder.served_model: should be a model name or null"),
        ("embedder.connect_timeout=0", r"embedder.connect_timeout: should be positive, got 0"),
        ("embedder.read_timeout=-1", r"embedder.read_timeout: should be positive, got -1"),
        ("embedder.max_retries=-1", r"embedder.max_retries: should be >= 0, got -1"),
    ],
)
def test_bad_values_name_the_dotted_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [*REMOTE, override])


def test_a_line_in_a_file_is_named_with_the_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("embedder:\n  backend: openai\n  read_timeout: 0\n  base_url: http://h/v1\n")
    with pytest.raises(ConfigError, match=r"embedder.read_timeout: should be positive, got 0\.0 \(.*c\.yaml:3\)"):
        load_config(path)


def test_onnx_loads_from_overrides_with_int8() -> None:
    embedder = load_config(None, ["embedder.backend=onnx", "embedder.quantize=int8"]).embedder
    assert (embedder.backend, embedder.quantize, embedder.model) == ("onnx", "int8", "minilm-l6")
    assert EmbedderConfig().quantize == "none" and EmbedderConfig(backend="onnx").quantize == "none"


@pytest.mark.parametrize("backend", ["torch", "openai"])
def test_int8_without_onnx_names_embedder_quantize_and_the_fix(backend: str) -> None:
    overrides = REMOTE if backend == "openai" else []
    with pytest.raises(ConfigError, match=r"^embedder.quantize: int8 needs embedder.backend=onnx .*quantize=none"):
        load_config(None, [*overrides, "embedder.quantize=int8"])


def test_an_unknown_quantize_names_the_key_and_the_values() -> None:
    with pytest.raises(ConfigError, match=r"embedder.quantize .*: should be one of none, int8, got 'int4'"):
        load_config(None, ["embedder.backend=onnx", "embedder.quantize=int4"])
    with pytest.raises(ConfigError, match=r"^embedder.quantize: should be none or int8, got 'int4'"):
        EmbedderConfig(backend="onnx", quantize="int4")  # type: ignore[arg-type]


def test_an_unknown_backend_built_in_code_names_the_values() -> None:
    with pytest.raises(ConfigError, match=r"^embedder.backend: should be one of torch \| onnx \| openai, got 'tei'"):
        EmbedderConfig(backend="tei")  # type: ignore[arg-type]


def test_onnx_on_cuda_names_embedder_device() -> None:
    with pytest.raises(ConfigError, match=r"^embedder.device: embedder.backend=onnx runs on the CPU"):
        load_config(None, ["embedder.backend=onnx", "embedder.device=cuda"])
    assert load_config(None, ["embedder.backend=onnx", "embedder.device=cpu"]).embedder.device == "cpu"
