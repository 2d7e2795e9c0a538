"""embedder.backend=onnx on a tiny sentence-transformers model built in code: torch's vectors, one verified export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from models.config import EmbedderConfig  # noqa: E402
from models.embedders import build_embedder  # noqa: E402
from models.errors import ModelError  # noqa: E402
from models.onnx_embedding import MANIFEST, export_dir, prepare_export, verify_export  # noqa: E402
from ragtune.cli import main  # noqa: E402

TEXTS = ["a short one", "The quick brown fox jumps over the lazy dog. " * 12, "x", "Paris is the capital of France."]


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/tiny.py's embedder: two BERT layers of width 32, mean pooling, normalisation, max_seq_length 64."""
    from tests.tiny import build_tiny_embedder

    folder = tmp_path_factory.mktemp("tiny-embedder")
    build_tiny_embedder(folder)
    return folder / "model"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RAGTUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_fp32_gives_torchs_vectors_and_a_verified_manifest(tiny_embedder: Path, cache: Path, capsys) -> None:
    reference = build_embedder(EmbedderConfig(model=str(tiny_embedder)))
    onnx = build_embedder(EmbedderConfig(model=str(tiny_embedder), backend="onnx"))
    assert "exporting embedder" in capsys.readouterr().err
    assert (onnx.dim, onnx.max_tokens) == (reference.dim, reference.max_tokens) == (32, 64)
    assert onnx.token_offsets(TEXTS[3]) == reference.token_offsets(TEXTS[3])
    cosines = (onnx.encode(TEXTS) * reference.encode(TEXTS)).sum(axis=1)
    assert cosines.min() > 0.99
    folder = export_dir(EmbedderConfig(model=str(tiny_embedder), backend="onnx"))
    assert folder.parent == cache / "embedders-onnx" and folder.name.startswith(tiny_embedder.name + "-fp32-")
    manifest = json.loads((folder / MANIFEST).read_text())
    assert "model.onnx" in manifest["files"] and len(manifest["files"]["model.onnx"]["sha256"]) == 64
    assert verify_export(folder) == folder
    assert onnx.encode([]).shape == (0, 32)


def test_int8_is_its_own_export_with_close_vectors(tiny_embedder: Path, cache: Path) -> None:
    config = EmbedderConfig(model=str(tiny_embedder), backend="onnx", quantize="int8")
    quantised = build_embedder(config)
    reference = build_embedder(EmbedderConfig(model=str(tiny_embedder)))
    assert "model-int8.onnx" in json.loads((export_dir(config) / MANIFEST).read_text())["files"]
    assert export_dir(config) != export_dir(EmbedderConfig(model=str(tiny_embedder), backend="onnx"))
    vectors = quantised.encode(TEXTS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert (vectors * reference.encode(TEXTS)).sum(axis=1).min() > 0.9


def test_the_second_load_reuses_the_export(tiny_embedder: Path, cache: Path, capsys) -> None:
    config = EmbedderConfig(model=str(tiny_embedder), backend="onnx")
    first = build_embedder(config).encode(TEXTS)
    model = export_dir(config) / "model.onnx"
    before = model.stat()
    capsys.readouterr()
    second = build_embedder(config).encode(TEXTS)
    assert "exporting" not in capsys.readouterr().err
    after = model.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert np.array_equal(first, second)


def test_a_damaged_export_names_the_folder_and_the_fix_and_prepare_repairs_it(
    tiny_embedder: Path, cache: Path, tmp_path: Path, capsys
) -> None:
    config = EmbedderConfig(model=str(tiny_embedder), backend="onnx")
    expected = build_embedder(config).encode(TEXTS)
    folder = export_dir(config)
    data = bytearray((folder / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte: only the sha256 can tell
    (folder / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"ragtune models prepare") as caught:
        build_embedder(config)
    assert str(folder) in str(caught.value) and "\n" not in str(caught.value)
    settings = ["--set", f"embedder.model={tiny_embedder}", "--set", "embedder.backend=onnx"]
    code = main(["models", "prepare", "--set", f"llm.model={tmp_path}", *settings])
    out = capsys.readouterr().out
    assert code == 0 and str(folder) in out
    assert np.allclose(build_embedder(config).encode(TEXTS), expected, atol=1e-6)


def test_a_truncated_export_is_damaged_too(tiny_embedder: Path, cache: Path) -> None:
    config = EmbedderConfig(model=str(tiny_embedder), backend="onnx")
    folder = prepare_export(config, progress=False)
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelError, match=r"is damaged .*tokenizer.json.*run `ragtune models prepare`"):
        build_embedder(config)


def test_a_missing_source_is_named(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"embedder.model=.*neither a preset"):
        build_embedder(EmbedderConfig(model=str(tmp_path / "nope"), backend="onnx"))
