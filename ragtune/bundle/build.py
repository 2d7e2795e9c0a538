"""`ragtune bundle`: wheels, lock, SBOM and install.sh in one folder; an unchanged rerun writes nothing."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.errors import InputError
from models.presets import PRESETS
from models.storage import atomic_write_bytes, file_lock, sha256_file
from models.trained_embedders import TrainedEmbedder
from ragtune.bundle import fetch
from ragtune.bundle.embedders import carry_embedders, check_embedders
from ragtune.bundle.plan import Plan, make_plan
from ragtune.bundle.sbom import make_sbom, wheel_metadata
from ragtune.bundle.verify import FORMAT, LOCK, Refused, verify

SBOM = "sbom.cdx.json"
_HERE = Path(__file__).resolve().parent
TOOLS = {"install.sh": _HERE / "install.sh", "verify.py": _HERE / "verify.py"}


@dataclass
class BundleResult:
    out: Path
    files: int
    bytes: int
    fetched: list[str]  # wheel files that were new this run
    written: list[str]  # bundle files (re)written this run: empty when nothing changed
    embedders: list[str] = field(default_factory=list)  # trained embedders carried, by name


def build_bundle(
    out: Path,
    repo: Path,
    target: str,
    presets: list[str],
    llamacpp: str = "auto",
    embedders: list[str] | None = None,
) -> BundleResult:
    """Build or refresh the bundle in `out`, then verify it exactly as install.sh will.

    `embedders`: names of trained embedders to carry (embedders/NAME/), each verified before anything is fetched.
    """
    stored = check_embedders(embedders or [])
    out.mkdir(parents=True, exist_ok=True)
    (out / "wheels").mkdir(exist_ok=True)
    with file_lock(out / ".bundle-writer.lock"):  # a second `ragtune bundle` on the same folder waits
        return _build(out, repo, target, presets, llamacpp, stored)


def _build(
    out: Path, repo: Path, target: str, presets: list[str], llamacpp: str, stored: list[TrainedEmbedder]
) -> BundleResult:
    previous = _previous_files(out)
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=out) as tmp:
        staging = Path(tmp)
        project = fetch.build_project(repo, staging)
        requires = wheel_metadata(project).get_all("Requires-Dist") or []
        plan = make_plan([r for r in requires if "extra ==" not in r], target, presets, repo / "requirements", llamacpp)
        wheels, fetched = _collect(plan, previous, out, staging)
        wheels.append(_place(project, out, "project", "built from this checkout", fetched))
    carried, copied = carry_embedders(stored, out)
    lock = _lock(plan, wheels, carried)
    written = [name for name, data in _outputs(lock, out).items() if _write_if_changed(out / name, data)]
    written.extend(copied)
    _remove_stale(out, {w.path for w in wheels})
    try:
        verify(out)
    except Refused as exc:
        raise InputError(f"the bundle in {out} does not verify: {exc}") from None
    total = sum(w.size for w in wheels)
    names = [e.name for e in stored]
    return BundleResult(out=out, files=len(wheels), bytes=total, fetched=fetched, written=written, embedders=names)


def _previous_files(out: Path) -> list[dict[str, Any]]:
    try:
        lock = json.loads((out / LOCK).read_text(encoding="utf-8"))
        return list(lock["files"]) if lock.get("format") == FORMAT else []
    except (OSError, ValueError, KeyError, TypeError):
        return []  # no usable lock: every file is fetched and checked again


def _collect(plan: Plan, previous: list[dict], out: Path, staging: Path) -> tuple[list[fetch.Wheel], list[str]]:
    """Reused wheels plus freshly fetched ones, each placed in out/wheels."""
    wanted = dict(plan.software)
    torch_kept = any(e["name"] == "torch" and e["version"] == wanted.get("torch") for e in previous)
    if plan.target == "cuda" and torch_kept:  # torch's own CUDA dependencies came with it last time
        wanted.update(
            {e["name"]: e["version"] for e in previous if e["role"] == "software" and e["name"] not in wanted}
        )
    wanted.update({m.name: m.version for m in plan.models})
    kept = fetch.reuse([e for e in previous if e["role"] != "project"], out, wanted)
    missing = {n: v for n, v in plan.software.items() if n not in kept}
    if plan.target == "cuda" and "torch" in missing:
        kept = {n: w for n, w in kept.items() if n in plan.software or w.role == "model"}
    sources = fetch.fetch_software(plan, missing, staging)
    sources.update(fetch.fetch_models(plan, {m.name for m in plan.models if m.name not in kept}, staging))
    fetched: list[str] = []
    wheels = list(kept.values())
    presets = {m.name: m.preset for m in plan.models}
    for path in sorted((staging / "wheels").glob("*.whl")) if (staging / "wheels").is_dir() else []:
        name = fetch.describe(path, "software", "").name
        role = "model" if name in presets else "software"
        wheel = _place(path, out, role, sources.get(name, "pip wheel cache"), fetched)
        wheel.preset = presets.get(name, "")
        wheels.append(wheel)
    _check_complete(plan, wheels)
    return wheels, fetched


def _place(path: Path, out: Path, role: str, source: str, fetched: list[str]) -> fetch.Wheel:
    """Move a staged wheel into out/wheels unless an identical file is already there."""
    wheel = fetch.describe(path, role, source)
    final = out / wheel.path
    if not (final.is_file() and final.stat().st_size == wheel.size and sha256_file(final) == wheel.sha256):
        shutil.move(path, final.with_name(f".{final.name}.tmp"))
        final.with_name(f".{final.name}.tmp").replace(final)  # atomic: a reader sees no half wheel
        fetched.append(wheel.path)
    return wheel


def _check_complete(plan: Plan, wheels: list[fetch.Wheel]) -> None:
    have = {w.name: w.version for w in wheels}
    for name, version in [*plan.software.items(), *((m.name, m.version) for m in plan.models)]:
        if have.get(name, "").split("+")[0] != version.split("+")[0]:
            raise InputError(f"pip gave {name} {have.get(name, 'nothing')}, the bundle needs {name}=={version}")
    for model in plan.models:
        wheel = next(w for w in wheels if w.name == model.name)
        if wheel.sha256 != model.sha256:
            raise InputError(f"{wheel.path}: sha256 {wheel.sha256} differs from requirements/models*.txt")


def _lock(plan: Plan, wheels: list[fetch.Wheel], embedders: list[dict[str, Any]]) -> dict[str, Any]:
    from ragtune import __version__

    return {
        "format": FORMAT,
        "ragtune": __version__,
        "target": plan.target,
        "python": plan.python,
        "presets": [{"name": p, "kind": PRESETS[p].kind, "sha256": PRESETS[p].sha256} for p in plan.presets],
        "files": [asdict(w) for w in sorted(wheels, key=lambda w: w.path)],
        "embedders": embedders,  # trained embedders: name, base, and each file's path, size and sha256
        "tools": [
            {"path": name, "size": path.stat().st_size, "sha256": sha256_file(path)} for name, path in TOOLS.items()
        ],
    }


def _outputs(lock: dict[str, Any], out: Path) -> dict[str, bytes]:
    def as_json(obj: Any) -> bytes:
        return (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8")

    files = {name: path.read_bytes() for name, path in TOOLS.items()}
    return {**files, LOCK: as_json(lock), SBOM: as_json(make_sbom(lock, out))}


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write_bytes(path, data, mode=0o755 if path.suffix == ".sh" else 0o644)
    return True


def _remove_stale(out: Path, keep: set[str]) -> None:
    """Wheels of an earlier bundle that this one does not name (install.sh would refuse them)."""
    for path in (out / "wheels").glob("*"):
        if path.is_file() and f"wheels/{path.name}" not in keep:
            path.unlink()
