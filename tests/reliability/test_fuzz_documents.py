"""Damaged documents of every type: each is read or refused by name, and an ingest of them all completes.

Seeded and bounded (tests/reliability/documents.py); `pytest --fuzz-long` runs thousands of cases.
"""

import os
import re
from pathlib import Path

import pytest

from models.config import RagConfig
from models.errors import InputError
from rag.loaders import UnreadableFileError, read_sections
from tests.conftest import EXAMPLES
from tests.reliability.documents import many_runs_docx, write_cases
from tests.reliability.ingest_child import ingest_in_child


def test_every_damaged_document_is_read_or_refused_by_name(tmp_path: Path, fuzz_cases: int) -> None:
    outcomes = {"read": 0, "refused": 0}
    for path in write_cases(tmp_path, fuzz_cases, seed=1):
        try:
            sections = read_sections(path)
        except UnreadableFileError as exc:
            assert str(exc).startswith(str(path)), exc  # the message names the file first
            assert "\n" not in str(exc), exc  # one line, fit for a report
            outcomes["refused"] += 1
            continue
        assert sections and all(s.text.strip() and "\x00" not in s.text for s in sections), path
        outcomes["read"] += 1
    # Both outcomes occur: the damage is neither always fatal nor always harmless.
    assert outcomes["read"] > fuzz_cases // 10 and outcomes["refused"] > fuzz_cases // 10, outcomes


def test_targeted_cases_end_as_they_should(tmp_path: Path) -> None:
    paths = {p.name: p for p in write_cases(tmp_path, 0, seed=1)}
    late_nul = read_sections(paths["late-nul.txt"])[0].text
    assert "\x00" not in late_nul and "hidden" in late_nul
    external = read_sections(paths["external-entity.docx"])
    assert "root:" not in "".join(s.text for s in external)  # no entity is resolved, no file is read
    refused = ("deep.jsonl", "empty.md", "only-space.txt", "not-utf8.txt", "binary.pdf", "text-named.docx")
    for name in (*refused, "cut-xml.docx", "no-document-xml.docx", "broken-central-directory.docx"):
        try:
            read_sections(paths[name])
        except UnreadableFileError:
            continue
        raise AssertionError(f"{name} should be refused")
    # Small files that expand once read are refused by the bound they pass, named as the key to raise.
    expanding = {
        "fanout.pdf": "over rag.max_pages=5000",
        "long-paragraph.docx": "over rag.max_text_mb=20",
        "many-tags.html": "over rag.max_html_tags=300000",
        "many-records.jsonl": "over rag.max_sections=100000",
        "many-headings.md": "over rag.max_sections=100000",
    }
    for name, reason in expanding.items():
        with pytest.raises(UnreadableFileError, match=re.escape(reason)):
            read_sections(paths[name])
    runs = tmp_path / "many-runs.docx"
    runs.write_bytes(many_runs_docx(100_001))
    with pytest.raises(UnreadableFileError, match=re.escape("over rag.max_docx_elements=100000")):
        read_sections(runs, RagConfig(max_docx_elements=100_000))


def test_oversized_files_and_text_are_refused_with_the_key_to_raise(tmp_path: Path) -> None:
    from models.config import RagConfig

    big = tmp_path / "big.txt"
    big.write_text("word " * 300_000)  # 1.5 MB
    with pytest.raises(UnreadableFileError, match=r"big.txt: 1.5 MB, over rag.max_file_mb=1; raise it"):
        read_sections(big, RagConfig(max_file_mb=1))
    with pytest.raises(UnreadableFileError, match=r"1.5 million characters of text, over rag.max_text_mb=0.5"):
        read_sections(big, RagConfig(max_text_mb=0.5))


def test_ingest_of_a_damaged_folder_indexes_every_healthy_document(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    damaged = write_cases(docs / "damaged", 36, seed=2)
    healthy = sorted((EXAMPLES / "docs").iterdir())
    for path in healthy:
        (docs / path.name).write_bytes(path.read_bytes())
    os.symlink(docs / "loop-b.txt", docs / "loop-a.txt")
    os.symlink(docs / "loop-a.txt", docs / "loop-b.txt")
    (docs / "huge.txt").write_text("word " * 600_000)  # 3 MB, over the bound set below
    result = ingest_in_child(docs, tmp_path / "home", "rag.max_file_mb=2")
    added = {Path(p).name for p in result["added"]}
    skipped = {Path(p).name: reason for p, reason in result["skipped"]}
    assert {p.name for p in healthy} <= added
    # Every file was either indexed or reported by name: nothing vanished, nothing stopped the run.
    assert {p.name for p in damaged} | {"loop-a.txt", "loop-b.txt", "huge.txt"} <= added | set(skipped)
    assert "over rag.max_file_mb=2" in skipped["huge.txt"] and "loops" in skipped["loop-a.txt"]
    assert result["peak_mb"] < 3000, result["peak_mb"]


def test_a_missing_root_is_still_an_error_not_a_skip(tmp_path: Path, embedder) -> None:
    from models.config import load_config
    from rag.ingest import ingest

    try:
        ingest([tmp_path / "nope"], load_config(), embedder, progress=False)
    except InputError as exc:
        assert "no such file or folder" in str(exc)
    else:
        raise AssertionError("a root that does not exist should be an error")


def test_a_pdf_that_exhausts_pypdf_limits_is_a_named_skip(tmp_path: Path) -> None:
    import io
    import logging
    import random

    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError

    from tests.reliability.documents import SEEDS, flipped

    data = flipped(SEEDS[".pdf"], random.Random(253))  # a seed found to drive pypdf into its limits
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        [page.extract_text() for page in PdfReader(io.BytesIO(data)).pages]
    except LimitReachedError:
        pass
    else:
        raise AssertionError("this damaged PDF should make pypdf itself raise LimitReachedError")
    path = tmp_path / "limits.pdf"
    path.write_bytes(data)
    try:
        read_sections(path)
    except UnreadableFileError as exc:
        assert str(exc).startswith(f"{path}: cannot be parsed (LimitReachedError")
    else:
        raise AssertionError("the loader should refuse it by name")


def test_odd_file_names_are_printed_escaped(tmp_path: Path, capsys) -> None:
    from ragtune.cli import main

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "evil\nskipped fake.txt").write_text("A file whose name forges a report line.")
    (docs / "\x1b[2Jclear.pdf").write_bytes(b"%PDF-1.4 broken")
    assert main(["ingest", str(docs)]) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\\x1b[2Jclear.pdf" in err  # the damaged PDF is reported, escaped
    assert main(["docs", "list"]) == 0
    listing = capsys.readouterr().out
    assert "evil\\x0askipped fake.txt" in listing and "evil\nskipped" not in listing


def test_a_docx_bomb_and_a_50_mb_text_cost_little_memory(tmp_path: Path) -> None:
    from tests.reliability.documents import docx_with

    docs = tmp_path / "docs"
    docs.mkdir()
    empty_runs = b"<w:p><w:r><w:t></w:t></w:r><w:r><w:t></w:t></w:r></w:p>" * 320_000  # ~18 MB of XML
    namespace = b'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    xml = b"<w:document " + namespace + b"><w:body>" + empty_runs + b"</w:body></w:document>"
    bomb = docs / "bomb.docx"
    bomb.write_bytes(docx_with(xml))
    assert bomb.stat().st_size < 200_000  # a small file that expands a hundredfold
    with open(docs / "huge.txt", "w") as handle:
        for _ in range(50):
            handle.write("All work and no play. " * 45_455 + "\n")  # 50 MB in all
    (docs / "fine.txt").write_text("The reading room opens at nine.")
    result = ingest_in_child(docs, tmp_path / "home")
    skipped = {Path(p).name: reason for p, reason in result["skipped"]}
    assert "holds no text" in skipped["bomb.docx"]
    assert "over rag.max_text_mb=20" in skipped["huge.txt"]
    assert [Path(p).name for p in result["added"]] == ["fine.txt"]
    assert result["peak_mb"] < 1500, result["peak_mb"]  # the embedder alone takes about 500 MB
