"""Model loading from local folders, .gguf files and presets; refusals are clear errors."""

import shutil
from pathlib import Path

import pytest

from models.config import EmbedderConfig, LLMConfig
from models.errors import ConfigError, ModelError
from models.loading import embedder_folder, lm_folder, load_lm, verify_materialised
from models.presets import PRESETS, get_preset, piece_paths


def test_local_folder_loads_in_eval_mode_with_requested_dtype(tiny_lm_path: Path) -> None:
    import torch

    lm = load_lm(LLMConfig(model=str(tiny_lm_path), dtype="bfloat16"))
    assert lm.dtype == torch.bfloat16 and next(lm.model.parameters()).dtype == torch.bfloat16
    assert not lm.model.training and lm.device == "cpu"


def test_pickle_only_folder_is_refused(tiny_lm_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_lm_path, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match="no \\*.safetensors weights; ragtune loads no pickle"):
        load_lm(LLMConfig(model=str(folder)))


def test_unknown_model_names_the_key_and_the_presets(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"llm.model='nope'.*qwen2.5-coder-0.5b-instruct"):
        lm_folder("nope")
    with pytest.raises(ModelError, match="embedder.model='nope'"):
        embedder_folder("nope")
    with pytest.raises(ModelError, match="not a lm preset"):
        get_preset("minilm-l6", "lm")


def test_cuda_without_a_gpu_is_a_config_error(tiny_lm_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="llm.device: cuda was asked for"):
        load_lm(LLMConfig(model=str(tiny_lm_path), device="cuda"))


def test_packaged_presets_are_installed() -> None:
    for preset in PRESETS.values():
        if not preset.optional:  # optional presets have their own requirements file and test
            assert all(path.exists() for path in piece_paths(preset))
    assert (embedder_folder(EmbedderConfig().model) / "model.safetensors").is_file()


@pytest.mark.slow
def test_gguf_file_materialises_once_atomically_and_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGTUNE_CACHE", str(tmp_path / "cache"))
    gguf = piece_paths(PRESETS["smollm2-135m-instruct"])[0]
    folder = lm_folder(str(gguf), progress=False)
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.gguf"))
    assert not list(folder.parent.glob(".*.partial"))
    assert lm_folder(str(gguf), progress=False) == folder  # second call reuses the cache
    verify_materialised(folder.name)
    lm = load_lm(LLMConfig(model=str(gguf), dtype="float32"), progress=False)
    assert lm.tokenizer.chat_template and lm.model.config.model_type == "llama"
    assert getattr(lm.model.config, "quantization_config", None) is None
    with open(folder / "model.safetensors", "r+b") as handle:  # flip one byte of the weights
        handle.seek(4096)
        byte = handle.read(1)
        handle.seek(4096)
        handle.write(bytes([byte[0] ^ 0xFF]))
    from models.errors import IndexCorruptError

    with pytest.raises(IndexCorruptError, match="sha256"):
        verify_materialised(folder.name)
