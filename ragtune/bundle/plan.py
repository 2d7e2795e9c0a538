"""What a bundle holds: the pinned dependency closure of this environment, torch for the target, model wheels."""

from __future__ import annotations

import importlib.metadata as metadata
import re
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from models.errors import InputError
from models.presets import PRESETS, Preset

TARGETS = ("cpu", "cuda")
# Built from source on this platform (no wheel on PyPI): included from pip's wheel cache when it is installed.
LLAMACPP = "llama-cpp-python"
_MODEL_LINE = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)\s+--hash=sha256:([0-9a-f]{64})\s*$")


@dataclass(frozen=True)
class ModelPin:
    name: str  # distribution name, canonical
    version: str
    sha256: str  # the wheel's hash, from requirements/models*.txt
    preset: str
    licence: str


@dataclass
class Plan:
    target: str
    python: dict[str, str]  # version, tag, platform: what the far side must run
    software: dict[str, str] = field(default_factory=dict)  # canonical name -> exact version
    models: list[ModelPin] = field(default_factory=list)
    presets: list[str] = field(default_factory=list)


def python_info() -> dict[str, str]:
    """The interpreter the bundle's wheels are for; the far side's must match."""
    major, minor = sys.version_info[:2]
    prefix = "cp" if sys.implementation.name == "cpython" else sys.implementation.name
    return {"version": f"{major}.{minor}", "tag": f"{prefix}{major}{minor}", "platform": sysconfig.get_platform()}


def dependency_closure(requirements: list[str], extras: tuple[str, ...] = ()) -> dict[str, str]:
    """Every distribution `requirements` pull in, at the version installed here (canonical name -> version)."""
    found: dict[str, str] = {}
    todo = [(Requirement(r), extras) for r in requirements]
    while todo:
        req, wanted = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in ("", *wanted)):
            continue
        key = canonicalize_name(req.name)
        if key in found:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise InputError(
                f"{req.name} (needed by the bundle) is not installed in this environment; "
                "bundle from the environment scripts/setup.sh made"
            ) from None
        if req.specifier and not req.specifier.contains(dist.version, prereleases=True):
            raise InputError(f"{req.name} {dist.version} is installed here, but the project needs {req}")
        found[key] = dist.version
        todo.extend((Requirement(r), tuple(req.extras)) for r in dist.requires or [])
    return found


def read_model_pins(requirements_dir: Path) -> dict[str, tuple[str, str]]:
    """name -> (version, wheel sha256) from every requirements/models*.txt (exact pins with hashes only)."""
    pins: dict[str, tuple[str, str]] = {}
    for path in sorted(requirements_dir.glob("models*.txt")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            match = _MODEL_LINE.match(line)
            if match is None:
                raise InputError(f"{path}:{number}: expected `name==version --hash=sha256:HEX`, got {line!r}")
            pins[canonicalize_name(match[1])] = (match[2], match[3])
    return pins


def model_pins(presets: list[str], requirements_dir: Path) -> list[ModelPin]:
    """The pinned wheels that carry each preset's files, in preset order."""
    pins = read_model_pins(requirements_dir)
    chosen: list[ModelPin] = []
    for name in presets:
        preset = _preset(name)
        for package, _ in preset.pieces:
            dist = canonicalize_name(package)
            if dist not in pins:
                raise InputError(
                    f"preset {name!r} needs the package {dist}, which no {requirements_dir}/models*.txt pins "
                    "with a hash; add `NAME==VERSION --hash=sha256:...` there"
                )
            if not any(p.name == dist for p in chosen):
                version, sha = pins[dist]
                chosen.append(ModelPin(dist, version, sha, name, preset.licence))
    return chosen


def _preset(name: str) -> Preset:
    preset = PRESETS.get(name)
    if preset is None:
        raise InputError(f"--preset {name!r} is no packaged model; presets: {', '.join(PRESETS)}")
    return preset


def make_plan(
    project_requires: list[str], target: str, presets: list[str], requirements_dir: Path, llamacpp: str
) -> Plan:
    """Resolve the bundle's contents; `llamacpp` is yes | no | auto (auto: when it is installed here)."""
    if target not in TARGETS:
        raise InputError(f"--target {target!r}: should be one of {', '.join(TARGETS)}")
    requires = list(project_requires)
    have_llamacpp = _installed(LLAMACPP)
    if llamacpp == "yes" and not have_llamacpp:
        raise InputError(f"--llamacpp yes: {LLAMACPP} is not installed here; `pip install {LLAMACPP}` first")
    if llamacpp == "yes" or (llamacpp == "auto" and have_llamacpp):
        requires.append(f"{LLAMACPP}=={metadata.version(LLAMACPP)}")
    software = dependency_closure(requires)
    if target == "cuda":
        # The CUDA build's own dependencies (nvidia-*) are resolved by pip from the index, not from here.
        software["torch"] = software["torch"].split("+")[0]
    elif "+" not in software["torch"] or not software["torch"].endswith("+cpu"):
        raise InputError(
            f"--target cpu needs the CPU build of torch in this environment, found torch {software['torch']}; "
            "install it with `pip install torch==VERSION+cpu --index-url https://download.pytorch.org/whl/cpu`"
        )
    plan = Plan(target=target, python=python_info(), software=software, presets=list(presets))
    plan.models = model_pins(presets, requirements_dir)
    return plan


def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
        return True
    except metadata.PackageNotFoundError:
        return False
