"""Embedders fine-tuned on the user's documents: sentence-transformers folders with a manifest, found by name.

`embedder.model=NAME` resolves here (after the presets, before a local path). Each folder holds what
SentenceTransformer.save wrote (safetensors only) plus `ragtune-embedder.json`: every file's size and sha256,
the base embedder, the training data and settings. Loading verifies every file; reading never writes, except
to finish a replacement that a crash interrupted.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import IndexCorruptError, InputError, ModelError
from models.paths import embedders_dir
from models.presets import PRESETS
from models.storage import file_lock, read_json, verify_files

MANIFEST = "ragtune-embedder.json"
FORMAT = "sentence-transformers/1"  # the folder layout and manifest this module reads
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
# The manifest fields that listings read, and the types they must have when present.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "files": (dict,),
    "format": (str,),
    "base": (str,),
    "base_fingerprint": (str,),
    "data": (dict,),
    "queries": (dict, str),
    "steps": (int,),
    "created": (str,),
}


@dataclass(frozen=True)
class TrainedEmbedder:
    name: str
    path: Path
    manifest: dict[str, Any]
    problem: str | None = None  # set by list_trained_embedders for a damaged one, which is listed, not raised


def check_embedder_name(name: str) -> str:
    """A name a new trained embedder may take: a plain folder name that no packaged model already uses."""
    _check_plain(name)
    if _is_preset(name):
        raise InputError(
            f"embedder name {name!r} collides with the packaged model {name.lower()!r}, which "
            f"embedder.model={name} would keep loading; pick another, such as {name}-tuned"
        )
    return name


def trained_embedder_path(name: str) -> Path:
    """Where the trained embedder NAME lives (or will), under $RAGTUNE_HOME/embedders."""
    return _folder(check_embedder_name(name))


def find_trained_embedder(model: str) -> Path | None:
    """The verified folder of the trained embedder `model` names; None when `model` names none (a preset, a path).

    Every listed file's size and sha256 is checked (about 0.3 s for a 90 MB model); a damaged one raises.
    """
    if not _NAME.fullmatch(model or "") or _is_preset(model):
        return None
    folder = _folder(model)
    if not folder.is_dir():
        return None
    return _checked(model, folder, hashes=True).path


def read_trained_embedder(name: str) -> TrainedEmbedder:
    """A stored trained embedder with every file verified; InputError naming the known ones when there is none."""
    return _checked(name, stored_embedder_path(name), hashes=True)


def stored_embedder_path(name: str) -> Path:
    """The folder of the stored trained embedder NAME, damaged or not (so that it can be removed)."""
    _check_plain(name)
    preset = _is_preset(name)
    folder = None if preset else _folder(name)
    if folder is None or not folder.is_dir():
        known = ", ".join(_known_names()) or "none yet"
        packaged = " (that is a packaged model, not a trained one)" if preset else ""
        raise InputError(
            f"no trained embedder named {name!r}{packaged} in {embedders_dir()} (known: {known}); "
            "train one with `ragtune train --target embedder --docs DIR --name NAME`"
        )
    return folder


def list_trained_embedders() -> list[TrainedEmbedder]:
    """Every trained embedder, sorted by name; a damaged one is listed with its problem instead of raising.

    Sizes and safetensors headers only: loading one verifies its hashes.
    """
    root = embedders_dir()
    if not root.is_dir():
        return []
    for moved in root.glob(".*.replaced"):  # finish replacements a crash interrupted, so that they are listed
        name = moved.name[1 : -len(".replaced")]
        if _NAME.fullmatch(name):
            _folder(name)
    found = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or not _NAME.fullmatch(folder.name):
            continue  # staging folders and anything not made here
        try:
            found.append(_checked(folder.name, folder, hashes=False))
        except ModelError as exc:  # one damaged embedder must not hide the others
            found.append(TrainedEmbedder(folder.name, folder, _manifest_or_empty(folder), str(exc)))
    return found


def read_embedder_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a trained embedder's folder, its fields checked; ModelError naming the fix otherwise."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise _damaged(Path(folder), f"{MANIFEST} is missing")
    try:
        manifest = read_json(path, "embedder manifest")
    except IndexCorruptError as exc:
        raise _damaged(Path(folder), str(exc)) from None
    if not isinstance(manifest, dict):
        raise _damaged(Path(folder), f"{path} is malformed (not an object)")
    if "files" not in manifest:
        raise _damaged(Path(folder), f"{path} is malformed (no files list)")
    for key, types in _FIELD_TYPES.items():
        value = manifest.get(key)
        # JSON's true/false read as bool, a subclass of int: never a step count here.
        if key in manifest and not (isinstance(value, types) and not isinstance(value, bool)):
            raise _damaged(Path(folder), f"{path} is malformed ({key} is {_json_kind(value)})")
    for entry in manifest["files"].values():
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise _damaged(Path(folder), f"{path} is malformed (a file without its sha256)")
    if manifest.get("format") != FORMAT:
        raise _damaged(Path(folder), f"it is in format {manifest.get('format')!r}; this ragtune reads {FORMAT!r}")
    return manifest


def embedder_fingerprint(folder: Path) -> str:
    """A short hash of the listed files' sha256s: it changes whenever the embedder is retrained differently."""
    files = read_embedder_manifest(folder)["files"]
    parts = [f"{name}:{entry['sha256']}" for name, entry in sorted(files.items())]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def folder_files(folder: Path) -> list[str]:
    """Every file under `folder`, as sorted paths relative to it (a sentence-transformers folder nests modules)."""
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())


def _checked(name: str, folder: Path, hashes: bool) -> TrainedEmbedder:
    """Refuse pickle files, a malformed manifest, files that differ from it or that it does not list."""
    names = folder_files(folder)
    pickles = [n for n in names if Path(n).suffix in PICKLE_SUFFIXES]
    if pickles:
        raise ModelError(
            f"trained embedder {name!r} ({folder}) holds pickle files ({', '.join(pickles)}), which can run code "
            f"when loaded; ragtune loads safetensors only: `ragtune embedders rm {name}` and train it again"
        )
    manifest = read_embedder_manifest(folder)
    files = manifest["files"]
    try:
        verify_files(folder, files, hashes=hashes)
    except IndexCorruptError as exc:
        raise _damaged(folder, str(exc).partition("; rebuild it")[0]) from None
    unlisted = [n for n in names if n not in files and n != MANIFEST]
    if unlisted:  # a file added afterwards could change what loads (a tokenizer file, a module's config)
        raise _damaged(folder, f"it holds files its manifest does not list ({', '.join(unlisted)})")
    weights = [n for n in files if n.endswith(".safetensors")]
    if not weights:
        raise _damaged(folder, "its manifest lists no *.safetensors weights")
    for weight in weights:
        _check_safetensors(folder, weight)
    return TrainedEmbedder(name, folder, manifest)


def _check_safetensors(folder: Path, name: str) -> None:
    """Parse the header: a file that only bears the name must never reach the model."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(folder / name), framework="pt") as weights:
            weights.keys()
    except (SafetensorError, OSError, ValueError) as exc:
        raise _damaged(folder, f"{name} is not a readable safetensors file ({exc})") from None


def _damaged(folder: Path, why: str) -> ModelError:
    return ModelError(
        f"trained embedder {folder.name!r} ({folder}) is damaged: {why}; "
        f"remove it with `ragtune embedders rm {folder.name}` and train it again"
    )


def _json_kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _manifest_or_empty(folder: Path) -> dict[str, Any]:
    try:
        return read_embedder_manifest(folder)
    except ModelError:
        return {}


def _check_plain(name: str) -> None:
    # Letters, digits, "-" and "_": a safe folder name that can never be read as a path.
    if not _NAME.fullmatch(name or ""):
        raise InputError(
            f"embedder name {name!r} should be a plain name of letters, digits, '-' and '_', such as library-minilm"
        )


def _is_preset(name: str) -> bool:
    # Case-insensitive: on a case-insensitive disk MiniLM-L6 and minilm-l6 would be one folder.
    return name.lower() in {preset.lower() for preset in PRESETS}


def publish_lock(name: str) -> Path:
    """The lock file a writer holds while it replaces NAME, so that no reader puts the old folder back meanwhile."""
    return embedders_dir() / f".{name}.lock"


def _folder(name: str) -> Path:
    final = embedders_dir() / name
    replaced = final.with_name(f".{final.name}.replaced")
    if not final.exists() and replaced.is_dir():  # a crash between moving the old one aside and publishing
        try:
            with file_lock(publish_lock(name), wait=False):
                if not final.exists() and replaced.is_dir():
                    os.replace(replaced, final)
        except BlockingIOError:
            pass  # not a crash: a writer is replacing it right now
    return final


def _known_names() -> list[str]:
    root = embedders_dir()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name)) if root.is_dir() else []


def embedder_identity(model: str) -> str:
    """What an index records as its embedder: embedder.model, plus `@fingerprint` for a trained embedder.

    A trained embedder trained again under the same name embeds differently; the fingerprint makes an index
    built before that refuse to answer (`ingest --rebuild`) instead of mixing two embedders' vectors.
    """
    folder = find_trained_embedder(model)
    return model if folder is None else f"{model}@{embedder_fingerprint(folder)}"
