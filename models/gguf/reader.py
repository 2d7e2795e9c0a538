"""The one GGUF header reader: metadata and tensor table of a GGUF file, checked whole before anything maps it.

llama.cpp memory-maps the file it is given; a truncated or foreign file would fail deep inside it (or crash),
so `read_gguf_header` (behind `check_gguf` and the LoRA checks in models/gguf/lora.py) reads the header and
the tensor table first and refuses such a file with a typed error naming it.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import ModelError

_MAGIC = b"GGUF"
# GGUF value types -> struct format of one scalar (8 = string, 9 = array are handled apart).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
# Real files nest arrays one level (a list of strings or numbers); deeper is a damaged or hostile header.
_MAX_NESTING = 16
_MAX_DIMS = 4
BaseGGUF = Path | Sequence[Path]  # a GGUF file, or the pieces of a split one in order


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


def check_gguf(path: Path) -> None:
    """Refuse a file that is not a GGUF, or whose tensor data runs past its end (a truncated download)."""
    read_gguf_header(path)


class _Damaged(Exception):
    """The header ends before its own counts say it should, or holds a value no GGUF may hold."""


class _Cut(_Damaged):
    """The header is whole but the tensor data it describes runs past the end of the file."""


def read_gguf_header(base: BaseGGUF, error: type[ModelError] = ModelError) -> GGUFHeader:
    """Metadata and tensor list of a GGUF file (or of a split one: the header lies in its first piece).

    Parsed here rather than with `gguf.GGUFReader`, which also decodes every vocabulary array (seconds for a
    150k-token vocabulary) when only a few keys and the tensor list are needed. A file that is no GGUF, is
    damaged or is truncated raises `error` (ModelError, or AdapterError for an adapter) naming it.
    """
    pieces = gguf_pieces(base)
    path = pieces[0]
    missing = [p for p in pieces if not p.is_file()]
    if missing:
        raise error(f"{missing[0]}: no such GGUF file")
    size = sum(p.stat().st_size for p in pieces)
    with open(path, "rb") as handle:
        start = handle.read(4)
        if start != _MAGIC:
            raise error(f"{path}: not a GGUF file (it starts with {start!r}, not b'GGUF'); give a .gguf file")
        if size < 24:
            raise error(f"{path} is truncated ({size} bytes): re-copy or re-create it")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            try:
                return _parse(path, data, size)
            except _Cut as exc:
                raise error(f"{path} is truncated: {exc}; re-copy or re-create it") from None
            except (_Damaged, struct.error, UnicodeDecodeError, OverflowError, MemoryError) as exc:
                raise error(
                    f"{path}: the GGUF header is truncated or damaged ({exc}); re-copy or re-create it"
                ) from None


def gguf_pieces(base: BaseGGUF) -> list[Path]:
    return [Path(base)] if isinstance(base, (str, os.PathLike)) else [Path(p) for p in base]


def _parse(path: Path, data: mmap.mmap, size: int) -> GGUFHeader:
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    if version not in (2, 3):
        raise _Damaged(f"GGUF version {version} is not supported (2 or 3)")
    if n_tensors > size // 24 or n_kv > size // 12:  # each entry takes at least that many bytes
        raise _Damaged(f"it claims {n_tensors} tensors and {n_kv} keys in {size} bytes")
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
            raise _Damaged(f"tensor {name!r} has {n_dims} dimensions")
        shape = struct.unpack_from(f"<{n_dims}Q", data, offset)
        ggml_type, start = struct.unpack_from("<IQ", data, offset + 8 * n_dims)
        offset += 8 * n_dims + 12
        tensors[name] = TensorInfo(tuple(shape), ggml_type, start)
        data_end = max(data_end, start + _nbytes(name, shape, ggml_type))
    alignment = metadata.get("general.alignment", 32)
    if type(alignment) is not int or alignment <= 0:  # bool is no alignment either
        raise _Damaged(f"general.alignment={alignment!r} should be a positive integer")
    data_start = -(-offset // alignment) * alignment
    if data_start + data_end > size:
        raise _Cut(f"its tensors need {data_start + data_end} bytes, the file has {size}")
    return GGUFHeader(path, metadata, tensors)


_SKIPPED = object()


def _string(data: mmap.mmap, offset: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<Q", data, offset)
    end = offset + 8 + length
    if end > len(data):
        raise _Damaged("a string runs past the end of the file")
    return data[offset + 8 : end].decode("utf-8"), end


def _value(data: mmap.mmap, offset: int, kind: int, depth: int = 0) -> tuple[Any, int]:
    if depth > _MAX_NESTING:  # a crafted header could otherwise nest arrays until the interpreter's stack runs out
        raise _Damaged(f"its metadata nests arrays more than {_MAX_NESTING} deep")
    if kind in _SCALARS:
        fmt = "<" + _SCALARS[kind]
        return struct.unpack_from(fmt, data, offset)[0], offset + struct.calcsize(fmt)
    if kind == _STRING:
        return _string(data, offset)
    if kind != _ARRAY:
        raise _Damaged(f"unknown metadata value type {kind}")
    item, count = struct.unpack_from("<IQ", data, offset)
    offset += 12
    if item in _SCALARS:  # fixed-size items: skip them in one step
        offset += count * struct.calcsize("<" + _SCALARS[item])
    elif item == _STRING:  # vocabularies: walk the lengths only
        for _ in range(count):
            offset += 8 + struct.unpack_from("<Q", data, offset)[0]
    else:
        for _ in range(count):
            _, offset = _value(data, offset, item, depth + 1)
    if offset > len(data):
        raise _Damaged("an array runs past the end of the file")
    return _SKIPPED, offset


def _nbytes(name: str, shape: tuple[int, ...], ggml_type: int) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):  # an id this gguf package does not know, or one without a size table entry
        raise _Damaged(f"tensor {name!r} has unknown ggml type {ggml_type}") from None
    count = 1
    for dim in shape:
        count *= dim
    return count // block * size


def pieces_sha256(pieces: Sequence[Path], out: Path | None = None) -> str:
    """sha256 of `pieces` concatenated in order; when `out` is given the concatenation is also written there."""
    digest = hashlib.sha256()
    with open(out, "wb") if out is not None else nullcontext(None) as sink:
        for piece in pieces:
            with open(piece, "rb") as source:
                while block := source.read(1 << 22):
                    digest.update(block)
                    if sink is not None:
                        sink.write(block)
    return digest.hexdigest()


def gguf_sha256(base: BaseGGUF) -> str:
    """sha256 of a GGUF file (or of its pieces concatenated), hashed once per process while it is unchanged."""
    pieces = gguf_pieces(base)
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in pieces)
    if key not in _HASHED:
        _HASHED[key] = pieces_sha256(pieces)
    return _HASHED[key]


_HASHED: dict[tuple, str] = {}
