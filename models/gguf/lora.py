"""GGUF LoRA adapters for llama.cpp: refuse a LoRA file that does not fit its base.

`check_lora_gguf` runs before llama.cpp ever opens the file: llama.cpp reports a bad adapter only as a failed
load (or not at all, when shapes happen to fit), so every reason to refuse it is named here first. Headers
are read with models.gguf.reader.read_gguf_header (a few keys and the tensor list, never the vocabulary).
"""

from __future__ import annotations

from pathlib import Path

from models.errors import AdapterError
from models.gguf.reader import BaseGGUF, GGUFHeader, gguf_sha256, read_gguf_header

GGUF_LORA_FILE = "adapter_model.gguf"
BASE_SHA256_KEY = "ragtune.base_sha256"  # sha256 of the base GGUF file the LoRA was written for
SOURCE_SHA256_KEY = "ragtune.source_sha256"  # sha256 of the PEFT adapter_model.safetensors it came from


def check_lora_gguf(path: Path, base_gguf: BaseGGUF, base_sha256: str | None = None) -> None:
    """Refuse a LoRA GGUF that llama.cpp must not load on `base_gguf`, naming the file and the fix.

    `base_sha256` is the base file's sha256 when the caller already knows it (a verified preset); otherwise
    the base is hashed (once per process).
    """
    path = Path(path)
    fix = "retrain the adapter with `ragtune train`"
    lora = read_gguf_header(path, AdapterError)
    if lora.metadata.get("general.type") != "adapter" or lora.metadata.get("adapter.type") != "lora":
        raise AdapterError(
            f"{path}: a GGUF file but no LoRA adapter (general.type={lora.metadata.get('general.type')!r}, "
            f"adapter.type={lora.metadata.get('adapter.type')!r}); {fix}"
        )
    base = read_gguf_header(base_gguf, AdapterError)
    if lora.architecture != base.architecture:
        raise AdapterError(
            f"{path}: a LoRA for architecture {lora.architecture!r} but the base {base.path.name} is "
            f"{base.architecture!r}; use the adapter with the model it was trained on (llm.model), or {fix}"
        )
    recorded = lora.metadata.get(BASE_SHA256_KEY)
    actual = base_sha256 or gguf_sha256(base_gguf)
    if recorded != actual:
        raise AdapterError(
            f"{path}: written for the base model with sha256 {recorded} but {base.path} has sha256 {actual}; "
            f"use the adapter with the model it was trained on (llm.model), or {fix}"
        )
    check_lora_shapes(lora, base)


def check_lora_shapes(lora: GGUFHeader, base: GGUFHeader) -> None:
    """Each lora_a/lora_b pair must exist, and fit its base tensor (the checks llama.cpp makes, named)."""
    targets = {name.rsplit(".", 1)[0] for name in lora.tensors}
    if not targets:
        raise AdapterError(f"{lora.path}: a LoRA GGUF without tensors; re-export it")
    for target in sorted(targets):
        a, b = lora.tensors.get(f"{target}.lora_a"), lora.tensors.get(f"{target}.lora_b")
        weight = base.tensors.get(target)
        if a is None or b is None:
            raise AdapterError(f"{lora.path}: {target} lacks its lora_a or lora_b tensor; re-export it")
        if weight is None:
            raise AdapterError(f"{lora.path}: {target} is not a tensor of the base {base.path.name}; re-export it")
        # GGUF order: lora_a is (in, r), lora_b is (r, out) and the base weight is (in, out).
        if (
            len(a.shape) != 2
            or len(b.shape) != 2
            or a.shape[1] != b.shape[0]
            or weight.shape[:2] != (a.shape[0], b.shape[1])
        ):
            raise AdapterError(
                f"{lora.path}: {target} has lora_a {a.shape} and lora_b {b.shape}, which do not fit the base "
                f"tensor {weight.shape}; the adapter was made for another model: re-export it"
            )
