"""Atomic writes, fsync'd renames, sha256 hashing and file manifests for everything ragtune stores."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from models.errors import IndexCorruptError

_CHUNK = 1 << 22


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks so large weights never sit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def folder_bytes(path: str | os.PathLike) -> int:
    """Bytes on disk of a file, or of every file under a folder (an index, an adapter)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory entry so a rename inside it survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` via temp file + fsync + rename: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600; a shared cache or data dir must stay readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str, mode: int = 0o644) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file and directory under `root` before it is published by a rename."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def publish_dir(staging: str | os.PathLike, final: str | os.PathLike, replace: bool = False) -> None:
    """Atomically move a fully written staging directory to its final name.

    With `replace`, a folder already at `final` is first moved aside and deleted once the new one is in
    place, so a crash leaves the old folder (under a hidden name) or the new one, never neither half-way.
    """
    final = Path(final)
    fsync_tree(staging)
    old = None
    if replace and final.exists():
        old = final.with_name(f".{final.name}.replaced")  # not ".partial": stale-staging cleanup must keep it
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    os.replace(staging, final)
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def make_staging_dir(parent: str | os.PathLike, name: str) -> Path:
    """A fresh hidden directory next to its final place, so the publishing rename stays on one disk.

    Its name carries the writer's pid, so that cleaning up after dead writers never touches a live one.
    """
    Path(parent).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}-", suffix=".partial", dir=parent))
    staging.chmod(0o755)  # mkdtemp makes 0700; published folders should read like any other
    return staging


@contextmanager
def file_lock(path: str | os.PathLike, wait: bool = True) -> Iterator[None]:
    """An exclusive flock on `path` (created if missing) for the block; released on exit, or when the holder
    dies. With `wait=False`, a lock held elsewhere raises BlockingIOError at once."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        yield
    finally:
        os.close(fd)  # closing releases the flock


@contextmanager
def staged_dir(parent: str | os.PathLike, name: str) -> Iterator[Path]:
    """`with staged_dir(parent, name) as staging:` write into it, then `publish_dir(staging, final)`.

    Leftovers of dead writers in `parent` are removed first; if the block fails, its staging folder is too.
    """
    remove_stale_staging(parent)
    staging = make_staging_dir(parent, name)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def remove_stale_staging(parent: str | os.PathLike) -> None:
    """Delete `.partial` directories left by processes that died mid-write (a live writer's stay)."""
    parent = Path(parent)
    if parent.is_dir():
        for entry in parent.glob(".*.partial"):
            if not _writer_alive(entry.name):
                shutil.rmtree(entry, ignore_errors=True)


def _writer_alive(staging_name: str) -> bool:
    match = _STAGING_PID.search(staging_name)
    if match is None:
        return False
    pid = int(match.group(1))
    if pid == os.getpid():
        return True  # another thread of this process may be writing it (a server's concurrent uploads)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


_STAGING_PID = re.compile(r"\.(\d+)-[^.]*\.partial$")


def describe_files(root: str | os.PathLike, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Size and sha256 of each named file under `root`, for a manifest."""
    root = Path(root)
    return {name: {"size": (root / name).stat().st_size, "sha256": sha256_file(root / name)} for name in names}


def verify_files(root: str | os.PathLike, files: dict[str, dict[str, Any]], *, hashes: bool = True) -> None:
    """Check each file against its manifest entry; raise IndexCorruptError naming the first mismatch.

    A malformed list (wrong types, a name that leads out of `root`) is corrupt too: it was edited or damaged.
    """
    root = Path(root)
    if not _well_formed(files):
        raise IndexCorruptError(
            f"{root}: the manifest's file list is malformed; rebuild it (re-run the command that made it)"
        )
    for name, expected in files.items():
        path = root / name
        if not path.is_file():
            raise IndexCorruptError(f"{path} is missing; rebuild it (re-run the command that made it)")
        size = path.stat().st_size
        if size != expected["size"]:
            raise IndexCorruptError(
                f"{path} is {size} bytes but its manifest says {expected['size']}: the file is truncated "
                "or was replaced; rebuild it (re-run the command that made it)"
            )
        if hashes and sha256_file(path) != expected["sha256"]:
            raise IndexCorruptError(
                f"{path} does not match the sha256 in its manifest: the file is corrupt; "
                "rebuild it (re-run the command that made it)"
            )


def read_utf8(path: str | os.PathLike, error: type[Exception], kind: str = "this file") -> str:
    """Text of a UTF-8 file (a BOM is fine); unreadable, binary or other encodings raise `error` naming it."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror})") from None
    if b"\x00" in data[:8192]:
        raise error(f"{path}: looks binary (NUL bytes); {kind} should be UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None


def _well_formed(files: Any) -> bool:
    if not isinstance(files, dict):
        return False
    for name, entry in files.items():
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or ".." in parts:
            return False
        if (
            not isinstance(entry, dict)
            or type(entry.get("size")) is not int
            or not isinstance(entry.get("sha256"), str)
        ):
            return False
    return True


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Read a JSON file we wrote; a damaged one is reported as corrupt, never as a JSON traceback."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexCorruptError(f"{what} {path} is unreadable ({exc}); rebuild it") from exc


def write_section(path: str | os.PathLike, name: str, section: str, title: str = "") -> None:
    """Replace the block between `<!-- NAME:start -->` and `<!-- NAME:end -->` in a text file, keeping
    the rest (several tools share one report file); appended when absent; atomic."""
    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{section.strip()}\n{end}"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    starts, ends = old.count(start), old.count(end)
    if starts == 1 and ends == 1 and old.index(start) < old.index(end):
        new = old[: old.index(start)] + block + old[old.index(end) + len(end) :]
    elif starts == 0 and ends == 0:
        new = (old.rstrip("\n") + "\n\n" if old.strip() else f"{title}\n\n" if title else "") + block + "\n"
    else:
        raise ValueError(
            f"{path}: found {starts} {start} and {ends} {end} markers; expected one of each, in order, or none: "
            "fix the file by hand (nothing was written)"
        )
    atomic_write_text(path, new)
