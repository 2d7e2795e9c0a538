import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.errors import IndexCorruptError
from models.storage import (
    atomic_write_bytes,
    describe_files,
    make_staging_dir,
    publish_dir,
    remove_stale_staging,
    staged_dir,
    verify_files,
)


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a" / "f.bin"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert sorted(os.listdir(target.parent)) == ["f.bin"]


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def broken_replace(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["f.bin"]


def test_manifest_detects_truncation_and_flipped_bytes(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"0123456789")
    files = describe_files(tmp_path, ["x"])
    verify_files(tmp_path, files)
    (tmp_path / "x").write_bytes(b"0123456788")
    with pytest.raises(IndexCorruptError, match="sha256"):
        verify_files(tmp_path, files)
    verify_files(tmp_path, files, hashes=False)  # same size: only the hash can tell
    (tmp_path / "x").write_bytes(b"01234")
    with pytest.raises(IndexCorruptError, match="5 bytes but its manifest says 10"):
        verify_files(tmp_path, files, hashes=False)
    (tmp_path / "x").unlink()
    with pytest.raises(IndexCorruptError, match="missing"):
        verify_files(tmp_path, files)


def test_staging_dirs_publish_atomically_and_stale_ones_are_removed(tmp_path: Path) -> None:
    staging = make_staging_dir(tmp_path, "gen")
    (staging / "f").write_text("data")
    publish_dir(staging, tmp_path / "gen-1")
    assert (tmp_path / "gen-1" / "f").read_text() == "data"
    live = make_staging_dir(tmp_path, "gen")  # this process's: a writer that is still at work
    dead = _staging_of_a_dead_process(tmp_path)
    legacy = tmp_path / ".gen.abc123.partial"  # no pid: left by an older version
    legacy.mkdir()
    remove_stale_staging(tmp_path)
    assert live.exists() and not dead.exists() and not legacy.exists() and (tmp_path / "gen-1").exists()


def test_a_second_writer_leaves_a_live_writers_staging_alone(tmp_path: Path) -> None:
    # Two processes sharing a cache: the second one's clean-up must not delete the first one's work.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        other = tmp_path / f".model.{child.pid}-xyz.partial"
        other.mkdir()
        with staged_dir(tmp_path, "model") as mine:
            assert other.exists() and mine.exists()
    finally:
        child.kill()
        child.wait()
    remove_stale_staging(tmp_path)
    assert not other.exists()


def test_staged_dir_is_removed_when_the_block_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), staged_dir(tmp_path, "x") as staging:
        (staging / "half").write_text("written")
        raise RuntimeError("disk full")
    assert not staging.exists() and not list(tmp_path.iterdir())


def test_publish_with_replace_swaps_the_folder(tmp_path: Path) -> None:
    final = tmp_path / "adapter"
    final.mkdir()
    (final / "old").write_text("old")
    with staged_dir(tmp_path, "adapter") as staging:
        (staging / "new").write_text("new")
        publish_dir(staging, final, replace=True)
    assert sorted(p.name for p in final.iterdir()) == ["new"] and sorted(p.name for p in tmp_path.iterdir()) == [
        "adapter"
    ]


def _staging_of_a_dead_process(parent: Path) -> Path:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid names no process now
    folder = parent / f".gen.{child.pid}-dead.partial"
    folder.mkdir()
    return folder


def test_write_section_replaces_only_its_own_block(tmp_path: Path) -> None:
    from models.storage import write_section

    report = tmp_path / "R.md"
    write_section(report, "a", "first A", title="# Report")
    write_section(report, "b", "first B")
    write_section(report, "a", "second A")
    text = report.read_text()
    assert text.startswith("# Report\n") and "second A" in text and "first A" not in text and "first B" in text
    assert text.index("second A") < text.index("first B")
    report.write_text(text + "<!-- a:start -->\n")
    with pytest.raises(ValueError, match="nothing was written"):
        write_section(report, "a", "third A")


def test_folder_bytes_counts_a_file_or_every_file_below_a_folder(tmp_path) -> None:
    from models.storage import folder_bytes

    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "sub" / "b.bin").write_bytes(b"y" * 5)
    assert folder_bytes(tmp_path) == 15 and folder_bytes(tmp_path / "a.bin") == 10
