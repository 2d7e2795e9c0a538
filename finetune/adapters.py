"""Adapters on disk: standard PEFT folders (adapter_config.json + adapter_model.safetensors) plus a manifest.

Loading refuses pickle files and adapters trained on another base model; merging checks for NaNs. Reading
an adapter never writes: its GGUF LoRA for llama.cpp is added by finetune/gguf_export.py.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import AdapterError, IndexCorruptError, InputError, ModelError
from models.gguf import gguf_sha256
from models.gguf.lora import GGUF_LORA_FILE, check_lora_gguf
from models.paths import adapters_dir
from models.storage import (
    atomic_write_json,
    describe_files,
    publish_dir,
    read_json,
    sha256_file,
    staged_dir,
    verify_files,
)

MANIFEST = "ragtune-adapter.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    path: Path
    manifest: dict[str, Any]


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")


def check_name(name: str) -> str:
    # Letters, digits, "-" and "_": a safe folder name and a valid PEFT adapter name (no ".").
    if not _NAME.fullmatch(name or ""):
        raise InputError(
            f"adapter name {name!r} should be a plain name of letters, digits, '-' and '_', such as library-v1"
        )
    return name


def adapter_path(name: str) -> Path:
    final = adapters_dir() / check_name(name)
    replaced = final.with_name(f".{final.name}.replaced")
    if not final.exists() and replaced.is_dir():  # a crash between moving the old one aside and publishing
        os.replace(replaced, final)
    return final


def base_fingerprint(folder: Path) -> str:
    """A short hash naming the exact base weights: from a materialised model's manifest, else hashed.

    A GGUF file run as it is (llama.cpp) is named by its full sha256, which adapters record as base_gguf_sha256.
    """
    if _is_gguf(folder):
        return gguf_sha256(folder)
    manifest = folder / "ragtune-manifest.json"
    if manifest.is_file():
        files = read_json(manifest, "model manifest")["files"]
        parts = [f"{name}:{entry['sha256']}" for name, entry in sorted(files.items()) if name.endswith(".safetensors")]
    else:
        parts = [f"{p.name}:{sha256_file(p)}" for p in sorted(folder.glob("*.safetensors"))]
    config = folder / "config.json"
    if config.is_file():
        parts.append(f"config.json:{sha256_file(config)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def save_adapter(
    model: Any,
    name: str,
    manifest: dict[str, Any],
    full_model_tokenizer: Any = None,
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """Write a PEFT model's adapter (or, for full fine-tuning, the whole model) atomically under its name.

    state_dict: the model's whole weights when the module itself holds only a shard of them (gathered by
    accelerator.get_state_dict under ZeRO-3/FSDP); save_pretrained then keeps the adapter's keys of it.
    """
    final = adapter_path(name)
    with staged_dir(adapters_dir(), name) as staging:
        model.save_pretrained(staging, safe_serialization=True, state_dict=state_dict)
        if full_model_tokenizer is not None:
            full_model_tokenizer.save_pretrained(staging)
        names = sorted(p.name for p in staging.iterdir() if p.is_file())
        atomic_write_json(staging / MANIFEST, {**manifest, "name": name, "files": describe_files(staging, names)})
        publish_dir(staging, final, replace=True)
    return final


def read_adapter(name: str) -> AdapterInfo:
    """An adapter's folder and manifest after checking every file against it and refusing pickles."""
    folder = adapter_path(name)
    if not (folder / MANIFEST).is_file():
        known = ", ".join(a.name for a in list_adapters()) or "none yet"
        raise InputError(
            f"no adapter named {name!r} in {folder.parent} (known: {known}); train one with `ragtune train`"
        )
    return _checked(name, folder, hashes=True)


def list_adapters() -> list[AdapterInfo]:
    """Every usable adapter; a damaged or unsafe one is reported by name on stderr and left out."""
    root = adapters_dir()
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and not folder.name.startswith(".") and (folder / MANIFEST).is_file():
            try:
                # Sizes and headers only: hashing every adapter on each listing would be slow for full models.
                found.append(_checked(folder.name, folder, hashes=False))
            except AdapterError as exc:  # one damaged adapter must not hide the others
                print(f"ragtune: skipping adapter {folder.name}: {exc}", file=sys.stderr)
    return found


def _checked(name: str, folder: Path, hashes: bool) -> AdapterInfo:
    """Refuse pickle files, a malformed manifest, files that differ from it, and weights that are no safetensors."""
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise AdapterError(
            f"adapter {name!r} contains pickle files ({', '.join(pickles)}), which can run code when loaded; "
            "ragtune loads safetensors only: re-save the adapter with safe_serialization=True"
        )
    try:
        manifest = read_json(folder / MANIFEST, "adapter manifest")
        _check_manifest(manifest, folder / MANIFEST)
        verify_files(folder, manifest["files"], hashes=hashes)
        for weights in sorted(folder.glob("*.safetensors")):
            _check_safetensors(weights)
    except IndexCorruptError as exc:
        raise AdapterError(f"adapter {name!r} is damaged: {exc}; retrain it or `ragtune adapters rm {name}`") from None
    return AdapterInfo(name, folder, manifest)


# The manifest fields that listings, checks and exports read, and the types they must have when present.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "files": (dict,),
    "metrics": (dict,),
    "method": (str,),
    "base_model": (str,),
    "base_fingerprint": (str,),
    "base_gguf_sha256": (str, type(None)),
    "gguf_lora": (dict,),
    "created_at": (int, float),
}


def _check_manifest(manifest: Any, path: Path) -> None:
    """The file list is checked by verify_files; every other field that is read must have its type, and each
    metric must be a number (or null), so a listing never fails on a manifest that was edited by hand."""
    if not isinstance(manifest, dict) or "files" not in manifest:
        raise IndexCorruptError(f"{path} is malformed (not an object with a files list)")
    for key, types in _FIELD_TYPES.items():
        if key in manifest and not _is_a(manifest[key], types):
            raise IndexCorruptError(f"{path} is malformed ({key} is {_json_kind(manifest[key])})")
    for key, value in manifest.get("metrics", {}).items():
        if not _is_a(value, (int, float, type(None))):
            raise IndexCorruptError(f"{path} is malformed (metrics.{key} is {_json_kind(value)}, not a number)")


def _is_a(value: Any, types: tuple[type, ...]) -> bool:
    # JSON's true/false read as bool, a subclass of int: never a number here.
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def _json_kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _check_safetensors(path: Path) -> None:
    """Parse the header before PEFT does: a file that only bears the name must never reach the model."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as weights:
            weights.keys()
    except (SafetensorError, OSError, ValueError) as exc:
        raise IndexCorruptError(f"{path} is not a readable safetensors file ({exc})") from None


def remove_adapter(name: str) -> Path:
    """Delete an adapter's folder, damaged or not (removing is how a damaged one is cleared)."""
    folder = adapter_path(name)
    if not (folder / MANIFEST).is_file():
        read_adapter(name)  # raises the "no adapter named ..." error listing the known ones
    shutil.rmtree(folder)
    return folder


def check_base(info: AdapterInfo, base_folder: Path, fingerprint: str | None = None) -> None:
    """Refuse an adapter trained on other base weights (`fingerprint`: the base's, when already known)."""
    if _is_gguf(base_folder):
        check_base_gguf(info, fingerprint or gguf_sha256(base_folder), base_folder)
        return
    expected = info.manifest.get("base_fingerprint")
    actual = fingerprint or base_fingerprint(base_folder)
    if expected != actual:
        raise AdapterError(
            f"adapter {info.name!r} was trained on base model {info.manifest.get('base_model')!r} "
            f"(fingerprint {expected}) but llm.model is {actual} ({base_folder}); "
            f"set llm.model={info.manifest.get('base_model')} or retrain the adapter"
        )


def base_gguf_sha256(info: AdapterInfo) -> str | None:
    """sha256 of the GGUF the adapter's base was prepared from: recorded at training, else the preset's pin."""
    from models.presets import PRESETS

    recorded = info.manifest.get("base_gguf_sha256")
    if recorded:
        return str(recorded)
    preset = PRESETS.get(str(info.manifest.get("base_model")))
    return preset.sha256 if preset is not None and preset.kind == "gguf" else None


def check_base_gguf(info: AdapterInfo, sha256: str, gguf: Path) -> None:
    """Refuse running an adapter over a GGUF base other than the one it was trained on."""
    expected = base_gguf_sha256(info)
    if expected is None and str(info.manifest.get("base_model", "")).endswith(".gguf"):
        source = Path(info.manifest["base_model"]).expanduser()
        expected = gguf_sha256(source) if source.is_file() else None  # hashed once per process
    if expected != sha256:
        raise AdapterError(
            f"adapter {info.name!r} was trained on base model {info.manifest.get('base_model')!r} "
            f"(GGUF sha256 {expected}) but llm.model is {gguf} (sha256 {sha256}); "
            f"set llm.model={info.manifest.get('base_model')} or retrain the adapter"
        )


def usable_adapter(name: str, base_folder: Path, fingerprint: str | None = None) -> AdapterInfo:
    """A verified LoRA adapter trained on `base_folder`'s weights, ready to load for answering; reads only.

    Over a GGUF base (llama.cpp) the adapter must already hold its GGUF LoRA, written when it was trained or
    by `ragtune adapters prepare NAME`: answering never writes into an adapter's folder.
    """
    info = read_adapter(name)  # every file hashed, once
    gguf = _is_gguf(base_folder)
    if gguf:  # the base's sha256: the caller's (a pinned preset, the server's) or hashed once per process
        fingerprint = fingerprint or gguf_sha256(base_folder)
    check_base(info, base_folder, fingerprint)
    if info.manifest.get("method") == "full":
        raise AdapterError(f"adapter {name!r} is a full fine-tune: use it as llm.model={info.path}")
    if gguf:
        if GGUF_LORA_FILE not in info.manifest["files"]:
            raise AdapterError(
                f"adapter {name!r} has no GGUF LoRA for llama.cpp (it was saved without one); "
                f"run `ragtune adapters prepare {name}` once, then ask again"
            )
        check_lora_gguf(info.path / GGUF_LORA_FILE, base_folder, fingerprint)
    return info


def _is_gguf(base: Path) -> bool:
    return Path(base).suffix == ".gguf" and Path(base).is_file()


def apply_adapter(model: Any, base_folder: Path, name: str) -> Any:
    """Wrap a loaded base model with a verified LoRA adapter, for merging or exporting it."""
    from peft import PeftModel

    info = usable_adapter(name, base_folder)
    return PeftModel.from_pretrained(model, str(info.path), is_trainable=False)


def merge_adapter(peft_model: Any) -> Any:
    """Fold LoRA weights into the base weights; refuses a result with NaN or infinite weights."""
    import torch

    merged = peft_model.merge_and_unload()
    for name, param in merged.named_parameters():
        if not torch.isfinite(param).all():
            raise ModelError(f"merging produced non-finite values in {name}: the adapter is broken; retrain it")
    return merged


def export_merged(peft_model: Any, tokenizer: Any, out: Path) -> Path:
    """Write a merged, standalone safetensors model folder (loadable by transformers and vLLM)."""
    out = Path(out).expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty; pass a new folder with -o")
    merged = merge_adapter(peft_model)
    with staged_dir(out.parent, out.name) as staging:
        merged.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if out.exists():
            out.rmdir()
        publish_dir(staging, out)
    return out
