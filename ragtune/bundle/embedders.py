"""Trained embedders in a bundle: copied in verified on the connected side, installed atomically on the far side.

The far side runs it from install.sh, after verify.py has checked every file against the lock:
    python -m ragtune.bundle.embedders BUNDLE_DIR
Each carried embedder goes to $RAGTUNE_HOME/embedders/NAME through a hidden staging folder beside it, and is
verified there as `ragtune embedders show NAME` would; a bad copy stops the install, naming the embedder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from models.errors import IndexCorruptError, InputError, ModelError, RagtuneError
from models.paths import embedders_dir
from models.storage import file_lock, publish_dir, sha256_file, staged_dir, verify_files
from models.trained_embedders import (
    MANIFEST,
    TrainedEmbedder,
    check_embedder_name,
    publish_lock,
    read_embedder_manifest,
    read_trained_embedder,
)

FOLDER = "embedders"  # in the bundle: embedders/NAME/, one folder per carried embedder


def check_embedders(names: list[str]) -> list[TrainedEmbedder]:
    """Every named trained embedder, each file verified; before anything is fetched, so a bad name fails fast."""
    found = []
    for name in dict.fromkeys(names):
        try:
            found.append(read_trained_embedder(name))
        except InputError as exc:  # a damaged one raises ModelError, which names it and the fix as it is
            raise InputError(f"--embedder: {exc}; `ragtune embedders list` shows the trained ones") from None
    return found


def carry_embedders(stored: list[TrainedEmbedder], out: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Copy each embedder into out/embedders/NAME; (lock entries, bundle files written this run).

    A file already there with the manifest's size and sha256 is kept, so an unchanged rerun writes nothing;
    folders and files the embedders no longer have are removed (verify.py refuses any the lock does not name).
    """
    root = out / FOLDER
    entries, written = [], []
    for embedder in stored:
        entry, changed = _carry(embedder, root / embedder.name)
        entries.append(entry)
        written.extend(changed)
    keep = {e["name"] for e in entries}
    for folder in root.iterdir() if root.is_dir() else []:
        if folder.name in keep:
            continue
        if folder.is_dir():
            shutil.rmtree(folder)
        else:
            folder.unlink()
    if root.is_dir() and not keep:
        root.rmdir()
    return entries, written


def _carry(embedder: TrainedEmbedder, folder: Path) -> tuple[dict[str, Any], list[str]]:
    files = embedder.manifest["files"]
    manifest = (embedder.path / MANIFEST).read_bytes()
    listed = [*files, MANIFEST]
    if folder.is_dir():
        for path in sorted(folder.rglob("*"), reverse=True):  # deepest first, so emptied module folders go too
            name = path.relative_to(folder).as_posix()
            if path.is_file() and name not in listed:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    written, described = [], []
    for name in listed:
        target = folder / name
        want = hashlib.sha256(manifest).hexdigest() if name == MANIFEST else files[name]["sha256"]
        if not (target.is_file() and sha256_file(target) == want):
            _copy(embedder.path / name, target)
            written.append(f"{FOLDER}/{embedder.name}/{name}")
            if sha256_file(target) != want:  # changed at the source since it was verified
                raise ModelError(
                    f"trained embedder {embedder.name!r}: {name} changed while it was copied into the bundle; "
                    "run `ragtune bundle` again once nothing is writing it"
                )
        described.append({"path": f"{FOLDER}/{embedder.name}/{name}", "size": target.stat().st_size, "sha256": want})
    if read_embedder_manifest(folder) != embedder.manifest:
        raise ModelError(
            f"trained embedder {embedder.name!r} was replaced while it was copied; run `ragtune bundle` again"
        )
    entry = {"name": embedder.name, "path": f"{FOLDER}/{embedder.name}", "base": embedder.manifest.get("base", "")}
    return {**entry, "files": described}, written


def _copy(source: Path, target: Path) -> None:
    """Write beside the target, then rename: a bundle never holds half a file under its final name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, partial)
    os.replace(partial, target)


def install_embedders(bundle: Path, lock: dict[str, Any]) -> list[tuple[str, str]]:
    """Place each embedder the lock carries in $RAGTUNE_HOME/embedders; (name, 'installed' | 'kept') each."""
    done = []
    for entry in lock.get("embedders", []):
        name = check_embedder_name(entry["name"])
        source = bundle / entry["path"]
        files = read_embedder_manifest(source)["files"]
        carried = {f["path"] for f in entry["files"]}
        if carried != {f"{entry['path']}/{n}" for n in [*files, MANIFEST]}:
            raise ModelError(f"trained embedder {name!r}: the bundle's lock and the embedder's manifest disagree")
        done.append((name, _install(name, source, files)))
    return done


def _install(name: str, source: Path, files: dict[str, Any]) -> str:
    final = embedders_dir() / name
    manifest = (source / MANIFEST).read_bytes()
    if (final / MANIFEST).is_file() and (final / MANIFEST).read_bytes() == manifest:
        try:
            read_trained_embedder(name)
            return "kept"  # the same embedder is already here, intact
        except ModelError:
            pass  # the same one, but damaged here: replaced by the bundle's copy
    try:
        with staged_dir(embedders_dir(), name) as staging:
            for file in [*files, MANIFEST]:
                (staging / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / file, staging / file)
            verify_files(staging, files)
            with file_lock(publish_lock(name)):  # readers never put an old copy back while it is replaced
                publish_dir(staging, final, replace=True)
    except IndexCorruptError as exc:
        raise ModelError(f"the copy of trained embedder {name!r} does not match its manifest: {exc}") from None
    except OSError as exc:
        raise ModelError(f"cannot write trained embedder {name!r} to {final}: {exc.strerror or exc}") from None
    read_trained_embedder(name)  # what `ragtune embedders show NAME` checks: every file, no extra, safetensors
    return "installed"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[3].strip(), file=sys.stderr)
        return 2
    bundle = Path(argv[0]).resolve()
    try:
        lock = json.loads((bundle / "bundle.lock.json").read_text(encoding="utf-8"))
        for name, how in install_embedders(bundle, lock):
            print(f"trained embedder {name} {how} in {embedders_dir() / name}; use it: --set embedder.model={name}")
    except (RagtuneError, OSError, ValueError, KeyError, TypeError) as exc:
        print(f"install.sh: trained embedder not installed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
