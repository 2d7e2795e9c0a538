"""Load the embedder and the LM from a preset name, a local Hugging Face folder or a `.gguf` file.

Always offline: `local_files_only=True`, safetensors only, never `trust_remote_code`. A GGUF file is
dequantised once into a safetensors folder under RAGTUNE_CACHE (atomically, with a manifest); later
loads read that folder in seconds.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from models.config import EmbedderConfig, LLMConfig  # noqa: E402
from models.device import resolve_device, resolve_dtype  # noqa: E402
from models.errors import ModelError  # noqa: E402
from models.gguf import pieces_sha256  # noqa: E402
from models.paths import cache_home  # noqa: E402
from models.presets import Preset, get_preset, piece_paths, preset_names  # noqa: E402
from models.storage import (  # noqa: E402
    atomic_write_json,
    describe_files,
    file_lock,
    publish_dir,
    read_json,
    sha256_file,
    staged_dir,
    verify_files,
)
from models.trained_embedders import find_trained_embedder  # noqa: E402

log = logging.getLogger(__name__)
_MANIFEST = "ragtune-manifest.json"


@dataclass
class LoadedLM:
    model: Any
    tokenizer: Any
    name: str  # what the config said: preset name or path
    path: Path  # the safetensors folder actually loaded
    device: str
    dtype: torch.dtype


def embedder_folder(model: str) -> Path:
    """The sentence-transformers folder for a preset name, a trained embedder's name or a local path."""
    preset = get_preset(model, "embedder")
    if preset is not None:
        return piece_paths(preset)[0]
    trained = find_trained_embedder(model)  # verified: every file's size and sha256
    if trained is not None:
        return trained
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ModelError(
            f"embedder.model={model!r} is neither a preset ({', '.join(preset_names('embedder'))}), a trained "
            "embedder (`ragtune embedders list`) nor a local folder"
        )
    return path


def load_embedder(config: EmbedderConfig):
    """A SentenceTransformer read from disk only."""
    from sentence_transformers import SentenceTransformer

    folder = embedder_folder(config.model)
    device = resolve_device(config.device, "embedder.device")
    try:
        return SentenceTransformer(str(folder), device=device, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"embedder.model={config.model!r}: cannot load {folder}: {exc}") from None


def lm_folder(model: str, progress: bool = True) -> Path:
    """The safetensors folder for an LM preset, a `.gguf` file (materialised once) or a local folder."""
    preset = get_preset(model, "lm")
    if preset is not None:
        return materialise_gguf(preset.name, piece_paths(preset), preset.sha256, progress)
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        digest = sha256_file(path)
        return materialise_gguf(f"gguf-{digest[:16]}", [path], digest, progress)
    if path.is_dir():
        return path
    raise ModelError(
        f"llm.model={model!r} is neither a preset ({', '.join(preset_names('lm'))}), "
        "a local Hugging Face folder nor a .gguf file"
    )


def load_lm(config: LLMConfig, progress: bool = True, quantization: Any = None, device: str | None = None) -> LoadedLM:
    """Tokenizer + causal LM on the configured device and dtype, in eval mode.

    `quantization` (a transformers quantization config) quantises the weights while they load, straight
    onto `device` (quantised weights cannot be moved afterwards); `device` defaults to llm.device.
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if config.threads:
        torch.set_num_threads(config.threads)
    folder = lm_folder(config.model, progress)
    device = device or resolve_device(config.device, "llm.device")
    dtype = resolve_dtype(config.dtype, device.split(":")[0])
    placement: dict[str, Any] = {} if quantization is None else {"quantization_config": quantization}
    if quantization is not None:
        placement["device_map"] = {"": device}
    if not any(folder.glob("*.safetensors")):
        raise ModelError(
            f"llm.model={config.model!r}: {folder} holds no *.safetensors weights; ragtune loads no pickle "
            "files (.bin/.pt): convert the model to safetensors first"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(
            folder, local_files_only=True, trust_remote_code=False, use_safetensors=True, dtype=dtype, **placement
        )
    except (OSError, ValueError, KeyError, SafetensorError) as exc:  # SafetensorError: a damaged weights file
        raise ModelError(f"llm.model={config.model!r}: cannot load {folder}: {exc}") from None
    if tokenizer.chat_template is None:
        raise ModelError(f"llm.model={config.model!r}: the tokenizer in {folder} has no chat template")
    if quantization is None:
        model.to(device)
    model.eval()
    return LoadedLM(model=model, tokenizer=tokenizer, name=config.model, path=folder, device=device, dtype=dtype)


def pad_token_id(tokenizer: Any) -> int:
    """The id that pads a batch: the tokenizer's own, else end-of-sequence (many chat models define none)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def materialise_gguf(key: str, pieces: list[Path], sha256: str, progress: bool = True) -> Path:
    """Assemble, verify and dequantise a GGUF file into `$RAGTUNE_CACHE/models/KEY` once; return it."""
    root = cache_home() / "models"
    final = root / key
    if (final / _MANIFEST).is_file():
        return _checked_sizes(final)
    root.mkdir(parents=True, exist_ok=True)
    # One process prepares a model; another asking for it meanwhile waits, then uses the result.
    with file_lock(root / f".{key}.lock"):
        if (final / _MANIFEST).is_file():
            return _checked_sizes(final)
        return _materialise(key, pieces, sha256, final, progress)


def _checked_sizes(final: Path) -> Path:
    manifest = read_json(final / _MANIFEST, "model manifest")
    # Sizes on every load (cheap); `ragtune models verify` re-hashes every byte.
    verify_files(final, manifest["files"], hashes=False)
    return final


def _materialise(key: str, pieces: list[Path], sha256: str, final: Path, progress: bool) -> Path:
    with staged_dir(final.parent, key) as staging:
        started = time.perf_counter()
        gguf = staging / "source.gguf"
        digest = pieces_sha256(pieces, gguf)
        if digest != sha256:
            raise ModelError(
                f"model {key}: the assembled GGUF has sha256 {digest}, expected {sha256}; "
                "the packaged files are damaged: reinstall them"
            )
        if progress:
            print(f"ragtune: preparing {key} once (dequantising GGUF to safetensors)...", flush=True)
        _dequantise(staging, gguf.name)
        gguf.unlink()
        names = sorted(p.name for p in staging.iterdir() if p.is_file())
        atomic_write_json(
            staging / _MANIFEST,
            {
                "source": [str(p) for p in pieces],
                "source_sha256": sha256,
                "files": describe_files(staging, names),
                "seconds": round(time.perf_counter() - started, 1),
            },
        )
        publish_dir(staging, final)
    return final


def _dequantise(folder: Path, gguf_name: str) -> None:
    """Load a GGUF with transformers and save plain safetensors.

    transformers leaves a GGUF-loaded model marked quantized, which makes save_pretrained and Trainer
    refuse it although its weights are ordinary floats; clearing the three markers fixes both.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_name, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot read GGUF {folder / gguf_name}: {exc}") from None
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def verify_materialised(key: str) -> Path:
    """Re-hash every file of a materialised model against its manifest."""
    final = cache_home() / "models" / key
    if not (final / _MANIFEST).is_file():
        raise ModelError(f"{key} has not been materialised in {final.parent}")
    verify_files(final, read_json(final / _MANIFEST, "model manifest")["files"], hashes=True)
    return final


def describe_preset(preset: Preset) -> str:
    return f"{preset.name:30} {preset.kind:9} {preset.description}"
