"""Writing trained embedders: publish one under its name atomically, remove it, export it as a plain folder."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from models.errors import IndexCorruptError, InputError, ModelError
from models.paths import embedders_dir
from models.storage import atomic_write_json, describe_files, file_lock, publish_dir, staged_dir, verify_files
from models.trained_embedders import (
    FORMAT,
    MANIFEST,
    PICKLE_SUFFIXES,
    folder_files,
    publish_lock,
    read_trained_embedder,
    stored_embedder_path,
    trained_embedder_path,
)

# Written here from the saved folder; a caller's field of the same name would be a mistake.
_OWN_FIELDS = ("name", "files", "format", "created")


def publish_embedder(model: Any, name: str, manifest: dict[str, Any]) -> Path:
    """Save a SentenceTransformer under NAME with its manifest, replacing an older NAME atomically; the folder.

    `manifest`: what the training records (base, base_fingerprint, data, queries, steps, seconds, peak_rss_mb,
    seed, settings); the file list with sizes and sha256, the format and the creation time are added here.
    """
    clash = sorted(set(_OWN_FIELDS) & set(manifest))
    if clash:
        raise ValueError(f"publish_embedder writes the manifest fields {clash} itself; leave them out")
    final = trained_embedder_path(name)
    with staged_dir(embedders_dir(), name) as staging:
        # Modules write their weights as model.safetensors (the transformer's at the root, others in N_Module/).
        # No model card: one can quote training data, and an exported embedder must not carry the documents.
        model.save(str(staging), create_model_card=False, safe_serialization=True)
        names = folder_files(staging)
        pickles = [n for n in names if Path(n).suffix in PICKLE_SUFFIXES]
        if pickles or not any(n.endswith(".safetensors") for n in names):
            raise ModelError(
                f"saving embedder {name!r} wrote {', '.join(pickles) or 'no safetensors weights'}: one of its "
                "modules cannot save safetensors, and ragtune stores and loads safetensors only"
            )
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        fields = {"name": name, "format": FORMAT, "created": created, "files": describe_files(staging, names)}
        atomic_write_json(staging / MANIFEST, {**manifest, **fields})
        with file_lock(publish_lock(name)):
            publish_dir(staging, final, replace=True)
    return final


def remove_trained_embedder(name: str) -> Path:
    """Delete a trained embedder's folder, damaged or not (removing is how a damaged one is cleared)."""
    folder = stored_embedder_path(name)
    # Renamed first, so that a crash while deleting leaves no half folder under the name; the next staging
    # cleanup deletes what is left, as it does for any writer's folder whose process is gone.
    doomed = folder.with_name(f".{folder.name}.{os.getpid()}-removed.partial")
    folder.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)
    return folder


def export_trained_embedder(name: str, out: Path) -> Path:
    """Copy a verified trained embedder into the new folder OUT as a plain sentence-transformers folder.

    The copy is verified against the manifest before it takes its name; it loads anywhere as embedder.model=OUT.
    """
    stored = read_trained_embedder(name)
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder; pass a new folder with --out")
    files = stored.manifest["files"]
    try:
        with staged_dir(out.parent, out.name) as staging:
            for file in files:
                (staging / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(stored.path / file, staging / file)
            verify_files(staging, files)
            if out.exists():
                out.rmdir()
            publish_dir(staging, out)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}; free space or pick another --out") from None
    except IndexCorruptError as exc:
        raise ModelError(f"the copy of trained embedder {name!r} does not match it: {exc}") from None
    return out
