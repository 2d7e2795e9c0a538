"""The optional 1.5B preset, when installed: its 22 pieces assemble into the pinned GGUF, a Qwen2 model."""

from __future__ import annotations

import pytest

from models.errors import ModelError
from models.gguf import gguf_sha256, read_gguf_header
from models.presets import PRESETS, piece_paths

PRESET = PRESETS["qwen2.5-coder-1.5b-instruct"]


@pytest.fixture(scope="module")
def pieces():
    try:
        return piece_paths(PRESET)
    except ModelError as exc:  # optional: installed with requirements/models-1.5b.txt
        pytest.skip(str(exc))


@pytest.mark.slow
def test_the_pieces_assemble_into_the_pinned_qwen2_gguf(pieces) -> None:
    assert len(pieces) == 22 and sum(p.stat().st_size for p in pieces) == 1_117_320_768
    assert gguf_sha256(pieces) == PRESET.sha256
    header = read_gguf_header(pieces)  # the header lies in the first piece; the sizes of all are checked
    assert header.architecture == "qwen2" and header.metadata["qwen2.block_count"] == 28
    assert header.metadata["general.name"] == "Qwen2.5 Coder 1.5B Instruct GGUF"
    assert header.tensors["blk.0.attn_q.weight"].shape == (1536, 1536)
