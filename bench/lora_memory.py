"""Memory of GGUF LoRA adapters resident over one llama.cpp base: RSS of the base alone, then with N adapters.

The parent (scripts/bench_rag.py, section 5) writes N random LoRAs for the model (PEFT, exported to GGUF);
a child process (`python -m bench.lora_memory MODEL THREADS FOLDER...`) measures, so the figures
are that process's own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MESSAGES = [{"role": "user", "content": "When does the library open?"}]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def random_adapters(model: str, out: Path, count: int = 3) -> list[Path]:
    """`count` PEFT LoRAs (r=8 on the attention and MLP projections, random B) exported as GGUF LoRAs."""
    import torch
    from peft import LoraConfig, get_peft_model

    from finetune.adapters import MANIFEST
    from finetune.gguf_export import export_gguf_lora
    from models.config import LLMConfig
    from models.gguf import gguf_file
    from models.loading import load_lm
    from models.presets import PRESETS
    from models.storage import atomic_write_json, describe_files

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    folders = []
    base = load_lm(LLMConfig(model=model, dtype="float32", device="cpu"), progress=False).model
    for seed in range(count):
        torch.manual_seed(seed)
        peft = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=targets))
        with torch.no_grad():
            for name, param in peft.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, 0.02)
        folder = out / f"lora{seed}"
        peft.save_pretrained(folder, safe_serialization=True)
        names = sorted(p.name for p in folder.iterdir() if p.is_file())
        atomic_write_json(
            folder / MANIFEST, {"name": folder.name, "method": "lora", "files": describe_files(folder, names)}
        )
        export_gguf_lora(folder, gguf_file(model), PRESETS[model].sha256 if model in PRESETS else None)
        folders.append(folder)
        base = peft.unload()  # the plain base again, for the next adapter
    return folders


def measure(model: str, threads: int, folders: list[Path]) -> dict[str, Any]:
    """RSS after one answer on the base, then after each adapter is loaded and has answered once."""
    from models.config import LLMConfig
    from models.generate import AdapterRef, SamplingParams, load_language_model

    lm = load_language_model(LLMConfig(model=model, backend="llamacpp", threads=threads), progress=False)
    params = SamplingParams(max_new_tokens=8)
    "".join(lm.generator().stream(MESSAGES, params))
    figures = {"base": rss_mb(), "adapters": []}
    for folder in folders:
        lm.load_adapter(AdapterRef(folder.name, folder))
        "".join(lm.generator(folder.name).stream(MESSAGES, params))
        figures["adapters"].append(rss_mb())
    "".join(lm.generator().stream(MESSAGES, params))  # back to the base: nothing reloaded
    figures["adapter_mb"] = [round(sum(p.stat().st_size for p in f.glob("*.gguf")) / 2**20, 1) for f in folders]
    return figures


def main() -> int:
    model, threads, *folders = sys.argv[1:]
    print(json.dumps(measure(model, int(threads), [Path(f) for f in folders])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
