"""The far side's gate: install.sh verifies a bundle against its lock and installs nothing when a file is off."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ragtune.bundle import verify
from ragtune.bundle.build import TOOLS
from ragtune.bundle.plan import python_info

TAG = f"cp{sys.version_info.major}{sys.version_info.minor}"


def make_wheel(folder: Path, name: str, version: str, tags: str = "py3-none-any") -> Path:
    """A small, valid, pure-Python wheel."""
    dist = f"{name}-{version}.dist-info"
    path = folder / f"{name}-{version}-{tags}.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}/__init__.py", f"VERSION = {version!r}\n" + "# padding\n" * 200)
        archive.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        archive.writestr(f"{dist}/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: {tags}\n")
        archive.writestr(f"{dist}/RECORD", "")
    return path


def entry(bundle: Path, path: Path, name: str, version: str, role: str) -> dict:
    data = path.read_bytes()
    return {
        "path": str(path.relative_to(bundle)),
        "name": name,
        "version": version,
        "role": role,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "source": "made by the test",
        "preset": "",
    }


def write_bundle(bundle: Path, wheels: list[tuple[str, str, str, str]]) -> dict:
    """A bundle with `wheels` (name, version, tags, role), its tools and a lock naming them all."""
    (bundle / "wheels").mkdir(parents=True)
    files = [
        entry(bundle, make_wheel(bundle / "wheels", name, version, tags), name, version, role)
        for name, version, tags, role in wheels
    ]
    for name, source in TOOLS.items():
        shutil.copy(source, bundle / name)
    lock = {
        "format": verify.FORMAT,
        "ragtune": "0.1.0",
        "target": "cpu",
        "python": python_info(),
        "presets": [],
        "files": files,
        "tools": [entry(bundle, bundle / name, name, "", "tool") for name in TOOLS],
    }
    (bundle / verify.LOCK).write_text(json.dumps(lock), encoding="utf-8")
    return lock


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    folder = tmp_path / "bundle"
    write_bundle(
        folder,
        [("alpha", "1.0", "py3-none-any", "software"), ("beta", "2.0", "py3-none-any", "model")],
    )
    return folder


def install(bundle: Path, venv: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(bundle / "install.sh"), str(venv)], capture_output=True, text=True, env=env)


def test_an_intact_bundle_verifies_and_gives_hash_checked_requirements(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "req"
    done = subprocess.run(
        [sys.executable, str(bundle / "verify.py"), str(bundle), "--requirements", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    lock = json.loads((bundle / verify.LOCK).read_text())
    assert (out / "software.txt").read_text() == f"alpha==1.0 --hash=sha256:{lock['files'][0]['sha256']}\n"
    assert (out / "models.txt").read_text() == f"beta==2.0 --hash=sha256:{lock['files'][1]['sha256']}\n"


def refused(bundle: Path, tmp_path: Path, names: str) -> str:
    """install.sh must stop, name the file, and leave no environment behind."""
    venv = tmp_path / "venv"
    done = install(bundle, venv)
    assert done.returncode == 1, done.stdout + done.stderr
    assert names in done.stderr, done.stderr
    assert "stopped before installing anything" in done.stdout
    assert not venv.exists()
    return done.stderr


def test_a_truncated_wheel_is_refused_by_name(bundle: Path, tmp_path: Path) -> None:
    wheel = bundle / "wheels" / "alpha-1.0-py3-none-any.whl"
    wheel.write_bytes(wheel.read_bytes()[:-100])
    assert "truncated" in refused(bundle, tmp_path, "wheels/alpha-1.0-py3-none-any.whl")


def test_a_changed_byte_is_refused_by_name(bundle: Path, tmp_path: Path) -> None:
    wheel = bundle / "wheels" / "beta-2.0-py3-none-any.whl"
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit different
    wheel.write_bytes(bytes(data))
    assert "altered" in refused(bundle, tmp_path, "wheels/beta-2.0-py3-none-any.whl")


def test_a_missing_wheel_is_refused_by_name(bundle: Path, tmp_path: Path) -> None:
    (bundle / "wheels" / "alpha-1.0-py3-none-any.whl").unlink()
    assert "missing" in refused(bundle, tmp_path, "wheels/alpha-1.0-py3-none-any.whl")


def test_a_wheel_the_lock_does_not_name_is_refused(bundle: Path, tmp_path: Path) -> None:
    make_wheel(bundle / "wheels", "gamma", "3.0")
    assert "not in bundle.lock.json" in refused(bundle, tmp_path, "wheels/gamma-3.0-py3-none-any.whl")


def test_a_changed_verifier_script_is_refused(bundle: Path, tmp_path: Path) -> None:
    with open(bundle / "verify.py", "a", encoding="utf-8") as handle:
        handle.write("\n# edited\n")
    refused(bundle, tmp_path, "verify.py")


def test_a_wheel_for_another_python_is_refused_by_name(tmp_path: Path) -> None:
    other = "cp310" if TAG != "cp310" else "cp312"
    folder = tmp_path / "bundle"
    write_bundle(folder, [("alpha", "1.0", f"{other}-{other}-manylinux_2_28_x86_64", "software")])
    message = refused(folder, tmp_path, f"wheels/alpha-1.0-{other}-{other}-manylinux_2_28_x86_64.whl")
    assert "cannot install" in message


def test_a_wheel_for_another_platform_is_refused_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "bundle"
    write_bundle(folder, [("alpha", "1.0", f"{TAG}-{TAG}-win_amd64", "software")])
    refused(folder, tmp_path, f"wheels/alpha-1.0-{TAG}-{TAG}-win_amd64.whl")


def test_a_bundle_locked_for_another_python_version_is_refused(bundle: Path, tmp_path: Path) -> None:
    lock = json.loads((bundle / verify.LOCK).read_text())
    lock["python"]["version"] = "3.9"
    (bundle / verify.LOCK).write_text(json.dumps(lock))
    assert "for Python 3.9" in refused(bundle, tmp_path, "bundle.lock.json")


def test_a_missing_or_broken_lock_is_refused(bundle: Path, tmp_path: Path) -> None:
    (bundle / verify.LOCK).write_text("{not json")
    assert "not valid JSON" in refused(bundle, tmp_path, "bundle.lock.json")
    (bundle / verify.LOCK).unlink()
    assert "missing" in refused(bundle, tmp_path, "bundle.lock.json")


def test_a_lock_missing_a_field_is_refused_without_a_traceback(bundle: Path, tmp_path: Path) -> None:
    lock = json.loads((bundle / verify.LOCK).read_text())
    del lock["files"][0]["sha256"]
    (bundle / verify.LOCK).write_text(json.dumps(lock))
    message = refused(bundle, tmp_path, "bundle.lock.json: malformed")
    assert "Traceback" not in message
