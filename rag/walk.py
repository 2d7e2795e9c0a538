"""Find documents under the given roots, never leaving them (no symlink or `..` escape)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from models.errors import InputError
from rag.loaders import is_supported


@dataclass(frozen=True)
class Found:
    root: Path  # resolved root the file was found under
    path: Path  # resolved file path, inside root
    skip_reason: str = ""  # non-empty: reported, not read


def resolve_roots(roots: list[str | Path]) -> list[Path]:
    resolved = []
    for root in roots:
        path = Path(root).expanduser()
        if not path.exists():
            raise InputError(f"{root}: no such file or folder; pass a folder of documents to ingest")
        resolved.append(path.resolve())
    return resolved


def inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def walk_documents(roots: list[Path]) -> Iterator[Found]:
    """Every file under each root, sorted; hidden folders (.git, ...) are not entered."""
    for root in roots:
        if root.is_file():
            yield _classify(root.parent, root)
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith("."):
                    yield _classify(root, Path(dirpath) / name)


def _classify(root: Path, path: Path) -> Found:
    resolved = path.resolve()
    if not inside(resolved, root):
        return Found(root, path, f"links outside {root} (to {resolved}); not followed")
    if not resolved.is_file():
        return Found(root, path, "not a regular file")
    if not is_supported(resolved):
        return Found(root, resolved, f"unsupported type {resolved.suffix or '(none)'}")
    return Found(root, resolved)
