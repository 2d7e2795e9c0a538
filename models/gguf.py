"""GGUF files as they are: where a model's GGUF lies (a preset assembled once and verified) and whether a file is whole.

llama.cpp memory-maps the file it is given; a truncated or foreign file would fail deep inside it (or crash),
so `check_gguf` reads the header and the tensor table first and refuses such a file with a ModelError.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

from models.errors import ModelError
from models.paths import cache_home
from models.presets import PRESETS, get_preset, piece_paths
from models.storage import atomic_write_json, file_lock, fsync_dir, read_json, sha256_file

_MAGIC = b"GGUF"
# GGUF metadata value types -> fixed byte size (8: string and 9: array are variable).
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def is_gguf_model(model: str) -> bool:
    """Whether `llm.model` names a GGUF: a GGUF preset or a path ending in `.gguf`."""
    preset = PRESETS.get(model)
    if preset is not None:
        return preset.kind == "gguf"
    return model.endswith(".gguf")


def gguf_file(model: str) -> Path:
    """The whole, verified GGUF file for a GGUF preset or a `.gguf` path (never copied when it is one file)."""
    preset = get_preset(model, "lm")
    if preset is not None:
        pieces = piece_paths(preset)
        path = _verified_single(preset.name, pieces[0], preset.sha256) if len(pieces) == 1 else None
        path = path or _assembled(preset.name, pieces, preset.sha256)
    else:
        path = Path(model).expanduser()
        if not path.is_file():
            raise ModelError(f"llm.model={model!r}: no such file; give a GGUF preset or the path of a .gguf file")
    check_gguf(path)
    return path


def _stamp(key: str) -> Path:
    return cache_home() / "gguf" / f"{key}.json"


def _verified_single(key: str, path: Path, sha256: str) -> Path:
    """A one-file preset is used in place; its hash is checked once and remembered with its size and mtime."""
    stat = path.stat()
    seen = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256}
    stamp = _stamp(key)
    if stamp.is_file() and read_json(stamp, "GGUF stamp") == seen:
        return path
    digest = sha256_file(path)
    if digest != sha256:
        raise ModelError(f"model {key}: {path} has sha256 {digest}, expected {sha256}; reinstall its package")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stamp, seen)
    return path


def _assembled(key: str, pieces: list[Path], sha256: str) -> Path:
    """A split preset is concatenated once into the cache (hash checked before it is published)."""
    root = cache_home() / "gguf"
    final = root / f"{key}.gguf"
    expected = {"sha256": sha256, "size": sum(p.stat().st_size for p in pieces)}
    if final.is_file() and _stamp(key).is_file() and read_json(_stamp(key), "GGUF stamp") == expected:
        if final.stat().st_size == expected["size"]:  # sizes on every load; `models verify` re-hashes
            return final
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f".{key}.lock"):
        staging = root / f".{key}.gguf.partial"
        from models.loading import _assemble

        digest = _assemble(pieces, staging)
        if digest != sha256:
            staging.unlink()
            raise ModelError(
                f"model {key}: the assembled GGUF has sha256 {digest}, expected {sha256}; "
                "the packaged files are damaged: reinstall them"
            )
        with open(staging, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(staging, final)
        fsync_dir(root)
        atomic_write_json(_stamp(key), expected)
    return final


def check_gguf(path: Path) -> None:
    """Refuse a file that is not a GGUF, or whose tensor data runs past its end (a truncated download)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        if handle.read(4) != _MAGIC:
            raise ModelError(f"{path} is not a GGUF file (it does not start with 'GGUF'); give a .gguf model file")
        if size < 24:
            raise ModelError(f"{path} is truncated ({size} bytes): re-copy or re-download it")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            try:
                needed = _data_end(data)
            except (struct.error, IndexError, ValueError) as exc:
                raise ModelError(f"{path}: the GGUF header is damaged or cut short ({exc}); re-copy the file") from None
    if needed > size:
        raise ModelError(f"{path} is truncated: its tensors need {needed} bytes, the file has {size}; re-copy it")


def _data_end(data: mmap.mmap) -> int:
    """The byte offset where the last tensor ends, from the header (GGUF v2/v3 layout)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    version, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} is not supported (2 or 3)")
    pos, alignment = 24, 32
    for _ in range(n_kv):
        key, pos = _string(data, pos)
        (kind,), pos = struct.unpack_from("<I", data, pos), pos + 4
        if key == "general.alignment" and kind == 4:
            alignment = struct.unpack_from("<I", data, pos)[0]
        pos = _skip_value(data, pos, kind)
    end = 0
    for _ in range(n_tensors):
        _, pos = _string(data, pos)
        (n_dims,) = struct.unpack_from("<I", data, pos)
        dims = struct.unpack_from(f"<{n_dims}Q", data, pos + 4)
        kind, offset = struct.unpack_from("<IQ", data, pos + 4 + 8 * n_dims)
        pos += 4 + 8 * n_dims + 12
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        elements = 1
        for dim in dims:
            elements *= dim
        end = max(end, offset + elements // block * type_size)
    start = -(-pos // alignment) * alignment
    return start + end


def _string(data: mmap.mmap, pos: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<Q", data, pos)
    if pos + 8 + length > len(data):
        raise ValueError("a string runs past the end of the file")
    return data[pos + 8 : pos + 8 + length].decode("utf-8", "replace"), pos + 8 + length


def _skip_value(data: mmap.mmap, pos: int, kind: int) -> int:
    if kind in _SCALAR_SIZES:
        return pos + _SCALAR_SIZES[kind]
    if kind == 8:
        (length,) = struct.unpack_from("<Q", data, pos)
        return pos + 8 + length
    if kind != 9:
        raise ValueError(f"unknown metadata value type {kind}")
    item, count = struct.unpack_from("<IQ", data, pos)
    pos += 12
    if item in _SCALAR_SIZES:
        return pos + count * _SCALAR_SIZES[item]
    for _ in range(count):
        pos = _skip_value(data, pos, item)
    return pos
