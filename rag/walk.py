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
    """Every file under each root, sorted; hidden folders (.git, ...) are not entered.

    Linked folders are never entered (a link can loop, or lead outside the root); each is reported.
    """
    for root in roots:
        if root.is_file():
            yield _classify(root.parent, root)
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                dirnames.remove(name)
                yield _linked_folder(root, Path(dirpath) / name)
            for name in sorted(filenames):
                if not name.startswith("."):
                    yield _classify(root, Path(dirpath) / name)


def _linked_folder(root: Path, path: Path) -> Found:
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return Found(root, path, "a symbolic link that loops or leads nowhere; not followed")
    if not inside(target, root):
        return Found(root, path, f"links outside {root} (to {target}); not followed")
    return Found(root, path, f"a symbolic link to the folder {target}, which is indexed under its own path")


def _classify(root: Path, path: Path) -> Found:
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):  # a link loop (a -> b -> a), a dangling link, a file gone meanwhile
        return Found(root, path, "a symbolic link that loops or leads nowhere; not followed")
    if not inside(resolved, root):
        return Found(root, path, f"links outside {root} (to {resolved}); not followed")
    if not resolved.is_file():
        return Found(root, path, "not a regular file")
    if not is_supported(resolved):
        return Found(root, resolved, f"unsupported type {resolved.suffix or '(none)'}")
    return Found(root, resolved)
