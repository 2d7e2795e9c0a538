"""An adapter as vLLM serves it: the PEFT folder (adapter_config.json + adapter_model.safetensors) and the command.

`vllm serve BASE --enable-lora --lora-modules NAME=DIR` loads such a folder over BASE; the adapter's
`base_model_name_or_path` is set to BASE so the folder says which weights it belongs to.
"""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from finetune.adapters import read_adapter
from models.errors import AdapterError, InputError
from models.storage import atomic_write_json, describe_files, publish_dir, read_json, staged_dir

FILES = ("adapter_config.json", "adapter_model.safetensors")
VLLM_DEFAULT_MAX_RANK = 16  # vLLM refuses a larger rank unless --max-lora-rank says so
EXPORT_MANIFEST = "ragtune-export.json"


@dataclass(frozen=True)
class VllmExport:
    folder: Path
    base: str  # what `vllm serve` loads
    command: str  # the exact command that serves the adapter


def export_for_vllm(name: str, out: Path, base: str | None = None) -> VllmExport:
    """Write adapter `name` into the new folder `out` for vLLM; `base` defaults to the local base it was trained on."""
    info = read_adapter(name)  # every file checked against the manifest, pickles refused
    if info.manifest.get("method") == "full":
        raise AdapterError(f"adapter {name!r} is a full fine-tune, a whole model: `vllm serve {info.path}`")
    config = read_json(info.path / "adapter_config.json", "adapter config")
    _check_servable(name, config)
    base = base or _trained_base(config, info.manifest)
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder; pass a new folder with -o")
    out.parent.mkdir(parents=True, exist_ok=True)
    with staged_dir(out.parent, out.name) as staging:
        atomic_write_json(staging / FILES[0], {**config, "base_model_name_or_path": base, "inference_mode": True})
        shutil.copyfile(info.path / FILES[1], staging / FILES[1])
        record = {"adapter": name, "base": base, "base_fingerprint": info.manifest.get("base_fingerprint")}
        atomic_write_json(staging / EXPORT_MANIFEST, {**record, "files": describe_files(staging, list(FILES))})
        if out.exists():
            out.rmdir()
        publish_dir(staging, out)
    return VllmExport(out, base, vllm_command(base, name, out, int(config.get("r") or 0)))


def vllm_command(base: str, name: str, folder: Path, rank: int) -> str:
    command = ["vllm", "serve", base, "--enable-lora", "--lora-modules", f"{name}={folder}"]
    if rank > VLLM_DEFAULT_MAX_RANK:
        command += ["--max-lora-rank", str(rank)]
    return shlex.join(command)


def _check_servable(name: str, config: dict) -> None:
    """What vLLM cannot load, refused here with the reason rather than by the server at start."""
    if config.get("peft_type") != "LORA":
        raise AdapterError(f"adapter {name!r} is {config.get('peft_type')}, not LoRA: vLLM serves LoRA adapters only")
    if config.get("use_dora"):
        raise AdapterError(f"adapter {name!r} uses DoRA, which vLLM does not serve; retrain it without DoRA")
    if config.get("modules_to_save"):
        modules = json.dumps(config["modules_to_save"])
        raise AdapterError(f"adapter {name!r} trains whole modules ({modules}), which vLLM LoRA does not load")


def _trained_base(config: dict, manifest: dict) -> str:
    """The base the adapter was trained on: the folder PEFT recorded, else llm.model as the manifest gives it."""
    return str(config.get("base_model_name_or_path") or manifest.get("base_model") or "")
