"""A GGUF is checked whole before llama.cpp maps it: a foreign, damaged or truncated file is a ModelError."""

import struct
from pathlib import Path

import numpy as np
import pytest

from models.errors import ModelError
from models.gguf import check_gguf, gguf_file, is_gguf_model
from tests.gguf_files import write_out


def _write_gguf(path: Path, tensors: int = 3, size: int = 4096) -> Path:
    """A small valid GGUF (llama architecture metadata, float32 tensors) written with the gguf package."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_string("tokenizer.chat_template", "{{ messages }}")
    writer.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(50)])
    for i in range(tensors):
        writer.add_tensor(f"blk.{i}.weight", np.full(size, i, dtype=np.float32))
    write_out(writer)
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
    with pytest.raises(ModelError, match="GGUF header is truncated or damaged"):
        check_gguf(path)


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.gguf"
    path.write_bytes(b"PK\x03\x04 not a gguf at all" * 10)
    with pytest.raises(ModelError, match="not a GGUF file"):
        check_gguf(path)


def test_a_missing_gguf_path_names_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such file"):
        gguf_file(str(tmp_path / "absent.gguf"))


def test_which_models_are_gguf() -> None:
    assert is_gguf_model("qwen2.5-coder-0.5b-instruct") and is_gguf_model("/m/x.gguf")
    assert not is_gguf_model("minilm-l6") and not is_gguf_model("/m/hf-folder")


def test_a_tensor_of_an_unknown_ggml_type_is_named(tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "m.gguf")
    data = bytearray(path.read_bytes())
    name = b"blk.1.weight"
    at = data.index(name) + len(name)  # then n_dims (u32), the dims (u64 each), the type (u32)
    n_dims = struct.unpack_from("<I", data, at)[0]
    struct.pack_into("<I", data, at + 4 + 8 * n_dims, 250)
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=rf"{path}: .*tensor 'blk.1.weight' has unknown ggml type 250"):
        check_gguf(path)


@pytest.mark.parametrize("alignment", [0, "32"])
def test_a_gguf_with_a_bad_alignment_is_refused_by_name(tmp_path: Path, alignment: int | str) -> None:
    from gguf import GGUFWriter

    path = tmp_path / "m.gguf"
    writer = GGUFWriter(str(path), "llama")
    if isinstance(alignment, int):
        writer.add_uint32("general.alignment", alignment)
    else:
        writer.add_string("general.alignment", alignment)
    writer.add_tensor("blk.0.weight", np.ones(64, dtype=np.float32))
    write_out(writer)
    with pytest.raises(ModelError, match=rf"{path}: .*general.alignment={alignment!r} should be a positive integer"):
        check_gguf(path)


def test_one_header_reader_serves_models_and_adapters(tmp_path: Path) -> None:
    """The LoRA checks read headers with the same reader, raising AdapterError instead of ModelError."""
    from models.errors import AdapterError
    from models.gguf import read_gguf_header

    path = _write_gguf(tmp_path / "m.gguf", tensors=2, size=64)
    header = read_gguf_header(path)
    assert header.architecture == "llama"
    assert {n: t.shape for n, t in header.tensors.items()} == {"blk.0.weight": (64,), "blk.1.weight": (64,)}
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(AdapterError, match=rf"{path} is truncated: its tensors need"):
        read_gguf_header(path, AdapterError)


def test_pieces_hash_to_the_whole_file_and_assemble_into_it(tmp_path: Path) -> None:
    import hashlib

    from models.gguf import gguf_sha256, pieces_sha256

    whole = _write_gguf(tmp_path / "m.gguf").read_bytes()
    pieces = []
    for index, start in enumerate(range(0, len(whole), 5000)):
        pieces.append(tmp_path / f"piece-{index}")
        pieces[-1].write_bytes(whole[start : start + 5000])
    expected = hashlib.sha256(whole).hexdigest()
    assert len(pieces) > 1 and pieces_sha256(pieces) == expected and gguf_sha256(pieces) == expected
    assert pieces_sha256(pieces, tmp_path / "out.gguf") == expected
    assert (tmp_path / "out.gguf").read_bytes() == whole


def test_metadata_arrays_nested_thousands_deep_are_refused_by_name(tmp_path: Path) -> None:
    # One key whose value is an array of arrays ... 5,000 levels deep: the reader once recursed until Python's
    # stack ran out and showed a RecursionError traceback.
    depth = 5000
    key = b"general.deep"
    nested = struct.pack("<IQ", 9, 1) * depth + struct.pack("<IQ", 4, 0)  # (array of arrays) x depth, then []
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key + struct.pack("<I", 9)
    path = tmp_path / "deep.gguf"
    path.write_bytes(header + nested)
    with pytest.raises(ModelError, match=rf"{path}: .*nests arrays more than 16 deep"):
        check_gguf(path)
