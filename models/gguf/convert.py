"""Convert a PEFT LoRA folder into a GGUF LoRA for llama.cpp, written next to its PEFT files and checked.

The layout is llama.cpp's own: general.type=adapter, adapter.type=lora, adapter.lora.alpha, and per target
`blk.N.<tensor>.weight.lora_a` / `.lora_b` in float32. PEFT stores lora_A as (r, in) and lora_B as (out, r);
GGUF lists shapes innermost first, so they are written as they are and read by llama.cpp as (in, r) and (r, out).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import AdapterError
from models.gguf.lora import BASE_SHA256_KEY, GGUF_LORA_FILE, SOURCE_SHA256_KEY, check_lora_gguf
from models.gguf.reader import BaseGGUF, GGUFHeader, gguf_sha256, read_gguf_header
from models.storage import fsync_dir, read_json, sha256_file

PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"
# Architectures whose tensor layout between transformers and GGUF is known here. llama: the GGUF writer
# interleaves the rotary halves of q and k rows (transformers undoes it when it reads a GGUF), so a LoRA's
# lora_b rows for q/k get the same reordering; qwen2 keeps the transformers order.
_ROW_PERMUTED = {"llama": {"attn_q": "head_count", "attn_k": "head_count_kv"}, "qwen2": {}}
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")
_UNSUPPORTED = (
    ("use_dora", "DoRA (use_dora: true)"),
    ("modules_to_save", "full copies of modules (modules_to_save)"),
    ("alpha_pattern", "per-module alphas (alpha_pattern)"),
    ("layer_replication", "replicated layers (layer_replication)"),
    ("lora_bias", "LoRA biases (lora_bias: true)"),
    ("fan_in_fan_out", "fan_in_fan_out weights (Conv1D models)"),
)


@dataclass(frozen=True)
class ConvertedLora:
    path: Path  # the GGUF LoRA, `adapter_model.gguf` in the PEFT folder
    base_sha256: str  # the base GGUF it was written for (also recorded in the file)
    alpha: float  # as llama.cpp scales it: alpha / r
    r: int


def convert_lora(peft_folder: Path, base_gguf: BaseGGUF, base_sha256: str | None = None) -> ConvertedLora:
    """Write `peft_folder`'s PEFT LoRA as `peft_folder/adapter_model.gguf` for `base_gguf`, checked as llama.cpp
    would load it.

    `base_gguf` is the base's GGUF file, or its pieces in order (a split preset); `base_sha256` is the whole
    file's sha256 when already known (a verified preset), else it is hashed. The file replaces any earlier
    one atomically (a failed write leaves no partial file); the caller serialises writers of one folder.
    """
    folder = Path(peft_folder)
    base_sha256 = base_sha256 or gguf_sha256(base_gguf)
    base = read_gguf_header(base_gguf, AdapterError)
    rank, alpha = _lora_settings(folder)
    tensors = _gguf_tensors(folder, base)
    out = folder / GGUF_LORA_FILE
    _write_atomic(out, base.architecture, alpha, tensors, base_sha256, sha256_file(folder / PEFT_WEIGHTS))
    check_lora_gguf(out, base_gguf, base_sha256)
    return ConvertedLora(out, base_sha256, alpha, rank)


def _lora_settings(folder: Path) -> tuple[int, float]:
    """r and the alpha llama.cpp needs (it scales by alpha / r, PEFT by lora_alpha / r or / sqrt(r))."""
    path = folder / PEFT_CONFIG
    if not path.is_file():
        raise AdapterError(
            f"{folder}: no {PEFT_CONFIG}, so no LoRA adapter (a full fine-tune is a whole model: "
            "use it as llm.model with llm.backend=transformers)"
        )
    config = read_json(path, "adapter config")
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        kind = config.get("peft_type") if isinstance(config, dict) else None
        raise AdapterError(f"{path}: peft_type {kind!r} cannot be written as a GGUF LoRA (only LORA can)")
    for key, what in _UNSUPPORTED:
        if config.get(key):
            raise AdapterError(
                f"{path}: the adapter uses {what}, which llama.cpp LoRA cannot express; "
                "retrain it as a plain LoRA or use llm.backend=transformers"
            )
    if config.get("bias", "none") != "none":
        raise AdapterError(f"{path}: bias={config['bias']!r} trains biases, which a GGUF LoRA cannot carry")
    rank, alpha = _number(config, "r", path, int), _number(config, "lora_alpha", path, float)
    if config.get("rank_pattern") and config.get("use_rslora"):
        raise AdapterError(f"{path}: rank_pattern with use_rslora has no single llama.cpp alpha")
    # llama.cpp: scale = alpha / r; rsLoRA: lora_alpha / sqrt(r) = (lora_alpha * sqrt(r)) / r.
    return rank, alpha * math.sqrt(rank) if config.get("use_rslora") else alpha


def _number(config: dict[str, Any], key: str, path: Path, kind: type) -> Any:
    """config[key] as a positive int or float, else an AdapterError naming the file and the key."""
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or kind(value) != value:
        raise AdapterError(
            f"{path}: {key} should be a positive {kind.__name__}, got {value!r}; "
            "the file is damaged: retrain the adapter"
        )
    return kind(value)


def _metadata_int(base: GGUFHeader, key: str) -> int:
    """An integer the base GGUF's header must hold, else an AdapterError naming the file and the key."""
    value = base.metadata.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise AdapterError(
            f"{base.path}: the base GGUF has no usable {key} (got {value!r}); give the whole, original model file"
        )
    return value


def _gguf_tensors(folder: Path, base: GGUFHeader) -> dict[str, np.ndarray]:
    """PEFT's lora_A/lora_B pairs under their GGUF names, checked against the base's tensors."""
    from gguf import MODEL_ARCH_NAMES, get_tensor_name_map

    arch = base.architecture
    if arch not in _ROW_PERMUTED:
        raise AdapterError(
            f"{base.path.name}: GGUF LoRA export supports {', '.join(sorted(_ROW_PERMUTED))} models, "
            f"not {arch!r}; use llm.backend=transformers for this adapter"
        )
    blocks = _metadata_int(base, f"{arch}.block_count")
    names = get_tensor_name_map({v: k for k, v in MODEL_ARCH_NAMES.items()}[arch], blocks)
    pairs = _read_pairs(folder / PEFT_WEIGHTS)
    out: dict[str, np.ndarray] = {}
    for module, (a, b) in sorted(pairs.items()):
        target = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if target is None or target not in base.tensors:
            raise AdapterError(
                f"{folder}: the LoRA on {module} has no counterpart in the base GGUF (tensor {target}); "
                "llama.cpp can apply LoRA to attention and MLP projections: retrain with those target modules"
            )
        kind = target.split(".")[-2]
        if kind in _ROW_PERMUTED[arch]:
            b = _permute_rows(b, _metadata_int(base, f"{arch}.attention.{_ROW_PERMUTED[arch][kind]}"))
        out[f"{target}.lora_a"], out[f"{target}.lora_b"] = a, b
    return out


def _read_pairs(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """module -> (lora_A (r, in), lora_B (out, r)) as float32; any other tensor is refused by name."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise AdapterError(f"{path} is missing; the adapter has no PEFT weights to convert: retrain it")
    parts: dict[str, dict[str, np.ndarray]] = {}
    try:
        with safe_open(str(path), framework="pt") as weights:
            for key in weights.keys():
                match = _KEY.match(key)
                if match is None:
                    raise AdapterError(
                        f"{path}: tensor {key} is not a LoRA A/B matrix (DoRA magnitudes, embedding LoRA and "
                        "saved modules cannot be written as a GGUF LoRA); use llm.backend=transformers"
                    )
                tensor = weights.get_tensor(key).float().numpy()
                parts.setdefault(match["module"], {})[match["part"]] = tensor
    except SafetensorError as exc:
        raise AdapterError(f"{path} is not a readable safetensors file ({exc}); retrain the adapter") from None
    pairs = {}
    for module, ab in parts.items():
        if set(ab) != {"A", "B"} or ab["A"].shape[0] != ab["B"].shape[1]:
            raise AdapterError(f"{path}: {module} lacks a matching lora_A/lora_B pair; retrain the adapter")
        pairs[module] = (np.ascontiguousarray(ab["A"]), np.ascontiguousarray(ab["B"]))
    if not pairs:
        raise AdapterError(f"{path} holds no LoRA tensors; retrain the adapter")
    return pairs


def _permute_rows(b: np.ndarray, heads: int) -> np.ndarray:
    """Reorder output rows from transformers' rotary layout (halves) to the GGUF one (interleaved pairs)."""
    out, rank = b.shape
    return np.ascontiguousarray(b.reshape(heads, 2, out // heads // 2, rank).swapaxes(1, 2).reshape(out, rank))


def _write_atomic(
    out: Path, arch: str, alpha: float, tensors: dict[str, np.ndarray], base_sha256: str, source_sha256: str
) -> None:
    from gguf import GGUFType, GGUFWriter, Keys

    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        writer = GGUFWriter(tmp, arch)
        try:  # closed on every path: a failed write must not leave its file descriptor open
            writer.add_type(GGUFType.ADAPTER)
            writer.add_string(Keys.Adapter.TYPE, "lora")
            writer.add_float32(Keys.Adapter.LORA_ALPHA, alpha)
            writer.add_string(BASE_SHA256_KEY, base_sha256)
            writer.add_string(SOURCE_SHA256_KEY, source_sha256)
            for name, array in tensors.items():
                writer.add_tensor(name, array.astype(np.float32))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(out.parent)
