"""A GGUF is checked whole before llama.cpp maps it: a foreign, damaged or truncated file is a ModelError."""

from pathlib import Path

import numpy as np
import pytest

from models.errors import ModelError
from models.gguf import check_gguf, gguf_file, is_gguf_model


def _write_gguf(path: Path, tensors: int = 3, size: int = 4096) -> Path:
    """A small valid GGUF (llama architecture metadata, float32 tensors) written with the gguf package."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_string("tokenizer.chat_template", "{{ messages }}")
    writer.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(50)])
    for i in range(tensors):
        writer.add_tensor(f"blk.{i}.weight", np.full(size, i, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_whole_gguf_passes(tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "m.gguf")
    check_gguf(path)
    assert gguf_file(str(path)) == path


def test_a_truncated_gguf_is_refused_with_the_sizes(tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "m.gguf")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])  # the last tensor is cut short
    with pytest.raises(ModelError, match=rf"is truncated: its tensors need {len(data)} bytes, the file has"):
        gguf_file(str(path))


def test_a_gguf_cut_inside_its_header_is_refused(tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "m.gguf")
    path.write_bytes(path.read_bytes()[:200])  # inside the metadata
    with pytest.raises(ModelError, match="header is damaged or cut short"):
        check_gguf(path)


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.gguf"
    path.write_bytes(b"PK\x03\x04 not a gguf at all" * 10)
    with pytest.raises(ModelError, match="is not a GGUF file"):
        check_gguf(path)


def test_a_missing_gguf_path_names_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such file"):
        gguf_file(str(tmp_path / "absent.gguf"))


def test_which_models_are_gguf() -> None:
    assert is_gguf_model("qwen2.5-coder-0.5b-instruct") and is_gguf_model("/m/x.gguf")
    assert not is_gguf_model("minilm-l6") and not is_gguf_model("/m/hf-folder")
