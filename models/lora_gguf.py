"""GGUF LoRA adapters for llama.cpp: read a GGUF header quickly and refuse a LoRA file that does not fit its base.

`check_lora_gguf` runs before llama.cpp ever opens the file: llama.cpp reports a bad adapter only as a failed
load (or not at all, when shapes happen to fit), so every reason to refuse it is named here first.
The header is parsed here rather than with `gguf.GGUFReader`, which also decodes every vocabulary array
(seconds for a 150k-token vocabulary) when only a few keys and the tensor list are needed.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import AdapterError
from models.storage import sha256_file

GGUF_LORA_FILE = "adapter_model.gguf"
BASE_SHA256_KEY = "ragtune.base_sha256"  # sha256 of the base GGUF file the LoRA was written for
SOURCE_SHA256_KEY = "ragtune.source_sha256"  # sha256 of the PEFT adapter_model.safetensors it came from

_MAGIC = b"GGUF"
# GGUF value types -> struct format of one scalar (8 = string, 9 = array are handled apart).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 4


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]  # GGUF order: shape[0] is the innermost (row length), as llama.cpp's ne[]
    type: int  # ggml type id
    offset: int  # from the start of the data section


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    metadata: dict[str, Any]  # scalars and strings; arrays are left out (vocabularies are large)
    tensors: dict[str, TensorInfo]

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))


class _Truncated(Exception):
    """The header ends before its own counts say it should, or the data section is short."""


BaseGGUF = Path | Sequence[Path]  # a GGUF file, or the pieces of a split one in order


def read_gguf_header(base: BaseGGUF) -> GGUFHeader:
    """Metadata and tensor list of a GGUF file (or of a split one: the header lies in its first piece);
    AdapterError if it is no GGUF or is truncated."""
    pieces = gguf_pieces(base)
    path = pieces[0]
    missing = [p for p in pieces if not p.is_file()]
    if missing:
        raise AdapterError(f"{missing[0]}: no such GGUF file")
    size = sum(p.stat().st_size for p in pieces)
    if size < 24:
        raise AdapterError(f"{path}: {size} bytes is too short to be a GGUF file; re-create it")
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != _MAGIC:
            raise AdapterError(f"{path}: not a GGUF file (it starts with {bytes(data[:4])!r}, not b'GGUF')")
        try:
            return _parse(path, data, size)
        except (_Truncated, struct.error, UnicodeDecodeError, OverflowError, MemoryError) as exc:
            raise AdapterError(
                f"{path}: truncated or damaged GGUF file ({exc or 'ends early'}); re-create it"
            ) from None


def gguf_pieces(base: BaseGGUF) -> list[Path]:
    return [Path(base)] if isinstance(base, (str, os.PathLike)) else [Path(p) for p in base]


def _parse(path: Path, data: mmap.mmap, size: int) -> GGUFHeader:
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    if version not in (2, 3):
        raise _Truncated(f"GGUF version {version} is not 2 or 3")
    if n_tensors > size // 24 or n_kv > size // 12:  # each entry takes at least that many bytes
        raise _Truncated(f"it claims {n_tensors} tensors and {n_kv} keys in {size} bytes")
    offset, metadata = 24, {}
    for _ in range(n_kv):
        key, offset = _string(data, offset)
        (kind,), offset = struct.unpack_from("<I", data, offset), offset + 4
        value, offset = _value(data, offset, kind)
        if value is not _SKIPPED:
            metadata[key] = value
    tensors, data_end = {}, 0
    for _ in range(n_tensors):
        name, offset = _string(data, offset)
        (n_dims,), offset = struct.unpack_from("<I", data, offset), offset + 4
        if not 1 <= n_dims <= _MAX_DIMS:
            raise _Truncated(f"tensor {name!r} has {n_dims} dimensions")
        shape = struct.unpack_from(f"<{n_dims}Q", data, offset)
        ggml_type, start = struct.unpack_from("<IQ", data, offset + 8 * n_dims)
        offset += 8 * n_dims + 12
        tensors[name] = TensorInfo(tuple(shape), ggml_type, start)
        data_end = max(data_end, start + _nbytes(name, shape, ggml_type))
    alignment = int(metadata.get("general.alignment", 32))
    data_start = -(-offset // alignment) * alignment
    if data_start + data_end > size:
        raise _Truncated(f"its tensors need {data_start + data_end} bytes but the file has {size}")
    return GGUFHeader(path, metadata, tensors)


_SKIPPED = object()


def _string(data: mmap.mmap, offset: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<Q", data, offset)
    end = offset + 8 + length
    if end > len(data):
        raise _Truncated("a string runs past the end of the file")
    return data[offset + 8 : end].decode("utf-8"), end


def _value(data: mmap.mmap, offset: int, kind: int) -> tuple[Any, int]:
    if kind in _SCALARS:
        fmt = "<" + _SCALARS[kind]
        return struct.unpack_from(fmt, data, offset)[0], offset + struct.calcsize(fmt)
    if kind == _STRING:
        return _string(data, offset)
    if kind != _ARRAY:
        raise _Truncated(f"unknown value type {kind}")
    item, count = struct.unpack_from("<IQ", data, offset)
    offset += 12
    if item in _SCALARS:  # fixed-size items: skip them in one step
        offset += count * struct.calcsize("<" + _SCALARS[item])
    elif item == _STRING:  # vocabularies: walk the lengths only
        for _ in range(count):
            offset += 8 + struct.unpack_from("<Q", data, offset)[0]
    else:
        for _ in range(count):
            _, offset = _value(data, offset, item)
    if offset > len(data):
        raise _Truncated("an array runs past the end of the file")
    return _SKIPPED, offset


def _nbytes(name: str, shape: tuple[int, ...], ggml_type: int) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise _Truncated(f"tensor {name!r} has unknown type {ggml_type}") from None
    count = 1
    for dim in shape:
        count *= dim
    return count // block * size


def gguf_sha256(base: BaseGGUF) -> str:
    """sha256 of a GGUF file (or of its pieces concatenated), hashed once per process while it is unchanged."""
    pieces = gguf_pieces(base)
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in pieces)
    if key not in _HASHED:
        if len(pieces) == 1:
            _HASHED[key] = sha256_file(pieces[0])
        else:
            digest = hashlib.sha256()
            for piece in pieces:
                with open(piece, "rb") as handle:
                    while block := handle.read(1 << 22):
                        digest.update(block)
            _HASHED[key] = digest.hexdigest()
    return _HASHED[key]


_HASHED: dict[tuple, str] = {}


def check_lora_gguf(path: Path, base_gguf: BaseGGUF, base_sha256: str | None = None) -> None:
    """Refuse a LoRA GGUF that llama.cpp must not load on `base_gguf`, naming the file and the fix.

    `base_sha256` is the base file's sha256 when the caller already knows it (a verified preset); otherwise
    the base is hashed (once per process).
    """
    path = Path(path)
    fix = "retrain the adapter with `ragtune train`"
    lora = read_gguf_header(path)
    if lora.metadata.get("general.type") != "adapter" or lora.metadata.get("adapter.type") != "lora":
        raise AdapterError(
            f"{path}: a GGUF file but no LoRA adapter (general.type={lora.metadata.get('general.type')!r}, "
            f"adapter.type={lora.metadata.get('adapter.type')!r}); {fix}"
        )
    base = read_gguf_header(base_gguf)
    if lora.architecture != base.architecture:
        raise AdapterError(
            f"{path}: a LoRA for architecture {lora.architecture!r} but the base {base.path.name} is "
            f"{base.architecture!r}; use the adapter with the model it was trained on (llm.model), or {fix}"
        )
    recorded = lora.metadata.get(BASE_SHA256_KEY)
    actual = base_sha256 or gguf_sha256(base_gguf)
    if recorded != actual:
        raise AdapterError(
            f"{path}: written for the base model with sha256 {recorded} but {base.path} has sha256 {actual}; "
            f"use the adapter with the model it was trained on (llm.model), or {fix}"
        )
    check_lora_shapes(lora, base)


def check_lora_shapes(lora: GGUFHeader, base: GGUFHeader) -> None:
    """Each lora_a/lora_b pair must exist, and fit its base tensor (the checks llama.cpp makes, named)."""
    targets = {name.rsplit(".", 1)[0] for name in lora.tensors}
    if not targets:
        raise AdapterError(f"{lora.path}: a LoRA GGUF without tensors; re-export it")
    for target in sorted(targets):
        a, b = lora.tensors.get(f"{target}.lora_a"), lora.tensors.get(f"{target}.lora_b")
        weight = base.tensors.get(target)
        if a is None or b is None:
            raise AdapterError(f"{lora.path}: {target} lacks its lora_a or lora_b tensor; re-export it")
        if weight is None:
            raise AdapterError(f"{lora.path}: {target} is not a tensor of the base {base.path.name}; re-export it")
        # GGUF order: lora_a is (in, r), lora_b is (r, out) and the base weight is (in, out).
        if (
            len(a.shape) != 2
            or len(b.shape) != 2
            or a.shape[1] != b.shape[0]
            or weight.shape[:2] != (a.shape[0], b.shape[1])
        ):
            raise AdapterError(
                f"{lora.path}: {target} has lora_a {a.shape} and lora_b {b.shape}, which do not fit the base "
                f"tensor {weight.shape}; the adapter was made for another model: re-export it"
            )
