import os
from pathlib import Path

import pytest

from models.errors import IndexCorruptError
from models.storage import (
    atomic_write_bytes,
    describe_files,
    make_staging_dir,
    publish_dir,
    remove_stale_staging,
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
    stale = make_staging_dir(tmp_path, "gen")
    remove_stale_staging(tmp_path)
    assert not stale.exists() and (tmp_path / "gen-1").exists()


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
