"""An adapter's GGUF LoRA for llama.cpp: converted from its PEFT files when it is trained or prepared, never
while answering, and listed in its manifest with its size and sha256 (models/gguf/convert.py converts)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from finetune.adapters import MANIFEST, AdapterInfo, check_base_gguf, read_adapter
from models.errors import AdapterError
from models.gguf import BaseGGUF, gguf_file, gguf_sha256, is_gguf_model
from models.gguf.convert import ConvertedLora, convert_lora
from models.gguf.lora import GGUF_LORA_FILE, check_lora_gguf
from models.presets import PRESETS
from models.storage import atomic_write_json, describe_files, file_lock, read_json


@dataclass(frozen=True)
class PreparedAdapter:
    info: AdapterInfo  # read again after the conversion: every file, the GGUF LoRA included, verified
    model: str  # the llm.model that names that base (a GGUF preset or a .gguf path)
    base: Path  # the base GGUF file the adapter's GGUF LoRA was written for
    converted: bool  # False when the adapter already had its GGUF LoRA


def export_gguf_lora(adapter_folder: Path, base_gguf: BaseGGUF, base_sha256: str | None = None) -> Path:
    """Convert `adapter_folder`'s PEFT LoRA into `adapter_folder/adapter_model.gguf` for `base_gguf`; return it.

    `base_gguf` is the base's GGUF file, or its pieces in order (a split preset); `base_sha256` is the whole
    file's sha256 when already known (a verified preset), else it is hashed. The file is written
    atomically, checked as llama.cpp would load it, then added to the adapter's manifest with size and sha256.
    """
    folder = Path(adapter_folder)
    # One writer per adapter: two conversions racing on the manifest would each drop the other's entry.
    with file_lock(folder.parent / f".{folder.name}.gguf.lock"):
        done = convert_lora(folder, base_gguf, base_sha256)
        _add_to_manifest(folder, done)
    return done.path


def _add_to_manifest(folder: Path, done: ConvertedLora) -> None:
    manifest = read_json(folder / MANIFEST, "adapter manifest")
    manifest["files"] = {**manifest["files"], **describe_files(folder, [done.path.name])}
    manifest["gguf_lora"] = {"base_sha256": done.base_sha256, "alpha": done.alpha, "r": done.r}
    atomic_write_json(folder / MANIFEST, manifest)


def prepare_adapter(name: str, llm_model: str, note: Callable[[str], None] | None = None) -> PreparedAdapter:
    """Give adapter `name` the GGUF LoRA llama.cpp needs when it has none (saved before GGUF LoRAs existed,
    or its conversion failed at training); an adapter that has one is verified and left as it is.

    The base is the GGUF the adapter was trained from (its manifest's base_model), else `llm_model` when that
    names a GGUF; either way it must be the very file the adapter was trained on. `note` hears, before the
    conversion, what is converted for which base.
    """
    info = read_adapter(name)  # every file hashed against the manifest, pickles refused
    if info.manifest.get("method") == "full":
        raise AdapterError(
            f"adapter {name!r} is a full fine-tune, a whole model with no LoRA to convert: "
            f"use it as llm.model={info.path}"
        )
    model, base, sha256 = _base_gguf(info, llm_model)
    check_base_gguf(info, sha256, base)
    if GGUF_LORA_FILE in info.manifest["files"]:
        check_lora_gguf(info.path / GGUF_LORA_FILE, base, sha256)
        return PreparedAdapter(info, model, base, converted=False)
    if note is not None:
        note(f"converting adapter {name!r} to a GGUF LoRA for {base.name} ...")
    export_gguf_lora(info.path, base, sha256)
    return PreparedAdapter(read_adapter(name), model, base, converted=True)


def _base_gguf(info: AdapterInfo, llm_model: str) -> tuple[str, Path, str]:
    """The model naming the base GGUF to convert for, its whole verified file, and its sha256 (a preset's pin,
    else hashed)."""
    trained_on = str(info.manifest.get("base_model") or "")
    for model in dict.fromkeys((trained_on, llm_model)):  # in order, once each
        if not model or not is_gguf_model(model):
            continue
        if model not in PRESETS and not Path(model).expanduser().is_file():
            continue  # a .gguf path recorded at training that is gone: llm.model may name its copy
        path = gguf_file(model)
        preset = PRESETS.get(model)
        return model, path, preset.sha256 if preset is not None else gguf_sha256(path)
    raise AdapterError(
        f"adapter {info.name!r} was trained on {trained_on!r} and llm.model is {llm_model!r}, neither a GGUF "
        "model that llama.cpp could run it over; set llm.model to the GGUF the adapter was trained from"
    )


def base_gguf_source(base_folder: Path) -> tuple[list[Path], str] | None:
    """The GGUF pieces and sha256 a prepared (dequantised) base folder was made from; None for other folders."""
    manifest = Path(base_folder) / "ragtune-manifest.json"
    if not manifest.is_file():
        return None
    recorded = read_json(manifest, "model manifest")
    if not recorded.get("source_sha256") or not recorded.get("source"):
        return None
    return [Path(p) for p in recorded["source"]], str(recorded["source_sha256"])
