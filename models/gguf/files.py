"""Where a model's GGUF lies: a `.gguf` path as it is, or a GGUF preset verified once (and assembled once
when it ships in pieces)."""

from __future__ import annotations

import os
from pathlib import Path

from models.errors import ModelError
from models.gguf.reader import check_gguf, pieces_sha256
from models.paths import cache_home
from models.presets import PRESETS, get_preset, piece_paths
from models.storage import atomic_write_json, file_lock, fsync_dir, read_json, sha256_file


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
        digest = pieces_sha256(pieces, staging)
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
