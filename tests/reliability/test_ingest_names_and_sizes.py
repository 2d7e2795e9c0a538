"""A file name that is not UTF-8 and an oversized file are skipped by name; the rest of the folder is indexed."""

import os
from pathlib import Path

from tests.reliability.ingest_child import ingest_in_child


def test_a_name_that_is_not_utf8_and_an_oversized_file_are_skipped_unread(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "fine.txt").write_text("The reading room opens at nine.")
    # A Latin-1 name: Python holds its byte 0xe9 as a lone surrogate, which SQLite cannot store as text.
    (docs / os.fsdecode(b"caf\xe9.txt")).write_text("A document whose name is not UTF-8.")
    with open(docs / "sparse.txt", "wb") as handle:
        handle.truncate(2_000_000_000)  # 2 GB that take no disk: over rag.max_file_mb=200
    result = ingest_in_child(docs, tmp_path / "home")
    skipped = {Path(p).name: reason for p, reason in result["skipped"]}
    assert [Path(p).name for p in result["added"]] == ["fine.txt"]
    assert "not valid UTF-8" in skipped["caf\udce9.txt"] and "rename it" in skipped["caf\udce9.txt"]
    assert skipped["sparse.txt"] == "2000.0 MB, over rag.max_file_mb=200; raise it to index this file"
    assert result["read_mb"] < 100, result["read_mb"]  # the oversized file is never read, not even to hash it
