"""Check a ragtune bundle against its lock before anything is installed (standard library only: it runs first).

Copied into every bundle as verify.py and run by its install.sh:
    python3 verify.py BUNDLE_DIR [--requirements OUT_DIR]
Every file the lock names (wheels, trained embedders) must be there with its size and sha256, no unnamed
wheel or embedder file may sit beside them, and the bundle must be for this Python and platform. The first
problem is printed, naming the file, and the exit status is 1; with --requirements, pip's hash-checked
requirement files are written to OUT_DIR.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

LOCK = "bundle.lock.json"
FORMAT = "ragtune-bundle/1"


class Refused(Exception):
    """The bundle cannot be installed here; the message names the file and the reason."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def read_lock(bundle: Path) -> dict:
    path = bundle / LOCK
    if not path.is_file():
        raise Refused(f"{LOCK}: missing from {bundle}; copy the whole bundle folder")
    try:
        lock = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(f"{LOCK}: not valid JSON ({exc}); copy it again from the connected side") from None
    if not isinstance(lock, dict) or lock.get("format") != FORMAT:
        raise Refused(f"{LOCK}: not a {FORMAT} lock file")
    return lock


def supported_tags() -> set[str] | None:
    """Every wheel tag this interpreter accepts (pip's own list); None when pip is not importable."""
    try:
        from pip._vendor.packaging.tags import sys_tags
    except ImportError:
        return None
    return {str(tag) for tag in sys_tags()}


def check_python(lock: dict) -> None:
    want = lock["python"]
    have = f"{sys.version_info.major}.{sys.version_info.minor}"
    if want["version"] != have:
        raise Refused(
            f"{LOCK}: this bundle is for Python {want['version']} ({want['tag']}, {want['platform']}), "
            f"but {sys.executable} is Python {have}; run install.sh with PYTHON=python{want['version']}, "
            "or build a bundle on a machine with this Python"
        )


def check_wheel_tags(path: str, supported: set[str] | None) -> None:
    """The wheel's file name must carry a tag this interpreter installs (py3-none-any, cp311-...-manylinux...)."""
    if supported is None:
        return
    parts = Path(path).name[: -len(".whl")].split("-")
    if len(parts) < 5:
        raise Refused(f"{path}: not a wheel file name (name-version-python-abi-platform.whl)")
    pythons, abis, platforms = parts[-3].split("."), parts[-2].split("."), parts[-1].split(".")
    if not any(f"{p}-{a}-{o}" in supported for p in pythons for a in abis for o in platforms):
        raise Refused(
            f"{path}: built for {parts[-3]}-{parts[-2]}-{parts[-1]}, which this Python "
            f"({sys.implementation.name} {sys.version_info.major}.{sys.version_info.minor}) cannot install; "
            "build the bundle on a machine like this one"
        )


def check_file(bundle: Path, entry: dict) -> None:
    path = bundle / entry["path"]
    if not path.is_file():
        raise Refused(f"{entry['path']}: missing from the bundle; copy the whole bundle folder again")
    size = path.stat().st_size
    if size != entry["size"]:
        raise Refused(f"{entry['path']}: {size} bytes, the lock says {entry['size']} (truncated or replaced)")
    if sha256_file(path) != entry["sha256"]:
        raise Refused(f"{entry['path']}: sha256 differs from the lock (altered); copy it again from the source")


def verify(bundle: Path) -> dict:
    """Check everything; return the lock. Raises Refused naming the first bad file."""
    lock = read_lock(bundle)
    check_python(lock)
    supported = supported_tags()
    listed = {entry["path"] for entry in lock["files"]}
    for entry in lock["files"]:
        check_wheel_tags(entry["path"], supported)
    carried = embedder_files(lock)
    listed.update(entry["path"] for entry in carried)
    # Trained embedders are installed whole (every file in their folder), so an unnamed file is refused too.
    found = [*(bundle / "wheels").glob("*"), *(bundle / "embedders").rglob("*")]
    stray = sorted(p.relative_to(bundle).as_posix() for p in found if p.is_file())
    for path in stray:
        if path not in listed:
            raise Refused(f"{path}: not in {LOCK}; remove it (the bundle installs only what its lock names)")
    for entry in [*lock["files"], *carried, *lock.get("tools", [])]:
        check_file(bundle, entry)
    return lock


def embedder_files(lock: dict) -> list[dict]:
    """The files of the trained embedders the bundle carries (embedders/NAME/...), each with size and sha256."""
    return [file for embedder in lock.get("embedders", []) for file in embedder["files"]]


def requirement_lines(lock: dict, roles: tuple[str, ...]) -> str:
    """pip's hash-checking requirement lines for the wheels with the given roles."""
    lines = (f"{e['name']}=={e['version']} --hash=sha256:{e['sha256']}" for e in lock["files"] if e["role"] in roles)
    return "".join(line + "\n" for line in lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    bundle = Path(argv[0]).resolve()
    try:
        lock = verify(bundle)
    except (KeyError, TypeError, AttributeError) as exc:
        print(f"refused: {LOCK}: malformed ({exc!r} missing or of the wrong type); copy it again", file=sys.stderr)
        return 1
    except Refused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    if "--requirements" in argv:
        out = Path(argv[argv.index("--requirements") + 1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "software.txt").write_text(requirement_lines(lock, ("software", "project")), encoding="utf-8")
        (out / "models.txt").write_text(requirement_lines(lock, ("model",)), encoding="utf-8")
    files = [*lock["files"], *embedder_files(lock)]
    total = sum(e["size"] for e in files)
    print(f"verified {len(files)} files ({total / 2**20:.0f} MiB) against {LOCK}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
