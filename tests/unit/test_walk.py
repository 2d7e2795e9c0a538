import os
from pathlib import Path

import pytest

from models.errors import InputError
from rag.walk import resolve_roots, walk_documents


def test_walk_stays_inside_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "docs", tmp_path / "secret"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "passwords.txt").write_text("hunter2")
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.md").write_text("b")
    (root / ".git").mkdir()
    (root / ".git" / "config.txt").write_text("hidden")
    (root / "image.png").write_bytes(b"\x89PNG")
    os.symlink(outside / "passwords.txt", root / "leak.txt")
    os.symlink(outside, root / "leakdir")
    os.symlink(root / "a.txt", root / "alias.txt")

    found = list(walk_documents(resolve_roots([root])))
    readable = sorted(str(f.path.relative_to(root.resolve())) for f in found if not f.skip_reason)
    skipped = {f.path.name: f.skip_reason for f in found if f.skip_reason}
    assert readable == ["a.txt", "a.txt", "sub/b.md"]  # the in-root alias resolves to the same file
    assert "links outside" in skipped["leak.txt"]
    assert "links outside" in skipped["leakdir"]  # a linked folder is reported, never silently passed over
    assert "unsupported type .png" in skipped["image.png"]
    assert all("passwords" not in str(f.path) or f.skip_reason for f in found)
    assert not any(".git" in str(f.path) for f in found)


def test_dotdot_root_is_resolved_and_missing_root_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("x")
    roots = resolve_roots([tmp_path / "d" / ".." / "d"])
    assert roots == [(tmp_path / "d").resolve()]
    with pytest.raises(InputError, match="no such file or folder"):
        resolve_roots([tmp_path / "nope"])


def test_link_loops_are_reported_by_name_and_the_rest_is_walked(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "good.txt").write_text("good")
    os.symlink(root / "b.txt", root / "a.txt")
    os.symlink(root / "a.txt", root / "b.txt")
    os.symlink(root / "loop.txt", root / "loop.txt")
    os.symlink(root / "nowhere.txt", root / "dangling.txt")
    os.symlink(root / "self", root / "self")  # a folder-looking link to itself
    os.symlink(root, root / "again")  # a folder link back to the root

    found = list(walk_documents(resolve_roots([root])))
    skipped = {f.path.name: f.skip_reason for f in found if f.skip_reason}
    assert [f.path.name for f in found if not f.skip_reason] == ["good.txt"]
    for name in ("a.txt", "b.txt", "loop.txt", "dangling.txt"):
        assert "loops or leads nowhere" in skipped[name], name
    assert "indexed under its own path" in skipped["again"]
