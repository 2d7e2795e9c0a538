from pathlib import Path

import pytest

from models.config import RagConfig
from rag.loaders import UnreadableFileError, read_sections
from tests.docmaker import make_docx, make_pdf


def test_text_markdown_and_bom(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_bytes("\ufeff# Title\nBody".encode())
    assert read_sections(tmp_path / "a.md")[0].text == "# Title\nBody"


def test_html_drops_scripts_and_styles(tmp_path: Path) -> None:
    (tmp_path / "a.html").write_text(
        "<html><style>p{}</style><script>var x=1</script><p>Open at <b>nine</b>.</p></html>"
    )
    text = read_sections(tmp_path / "a.html")[0].text
    assert "Open at" in text and "nine" in text and "var x" not in text and "p{}" not in text


def test_pdf_pages_become_located_sections(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "a.pdf", [["First page fact."], ["Second (page) fact."]])
    sections = read_sections(path)
    assert [s.locator for s in sections] == ["page 1", "page 2"]
    assert "Second (page) fact." in sections[1].text


def test_docx_paragraphs_and_tables(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "a.docx", ["Para one.", "Para two."], [["Room", "Seats"], ["Large", "40"]])
    text = read_sections(path)[0].text
    assert "Para two." in text and "Large | 40" in text


def test_jsonl_records_keep_line_numbers(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n\n{"text": "two", "x": 1}\n')
    sections = read_sections(tmp_path / "a.jsonl")
    assert [(s.text, s.locator) for s in sections] == [("one", "line 1"), ("two", "line 3")]
    assert read_sections(tmp_path / "a.jsonl", RagConfig(jsonl_text_field="text"))[0].text == "one"


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("bin.txt", b"abc\x00def", "looks binary"),
        ("latin.txt", "caf\xe9".encode("latin-1"), "not UTF-8"),
        ("empty.md", b"  \n\n", "holds no text"),
        ("bad.jsonl", b'{"text": "ok"}\n{broken\n', r"bad\.jsonl:2: not valid JSON"),
        ("field.jsonl", b'{"body": "x"}\n', r"field\.jsonl:1: .*string 'text' field.*rag\.jsonl_text_field"),
        ("bad.pdf", b"%PDF-1.4 garbage", "damaged PDF"),
        ("bad.docx", b"PK not a zip", "damaged .docx"),
        ("x.csv", b"a,b", "unsupported type"),
    ],
)
def test_unreadable_files_name_the_file_and_the_reason(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableFileError, match=message) as info:
        read_sections(path)
    assert name in str(info.value)


def _docx_xml(path: Path, body: str) -> Path:
    import zipfile

    namespace = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    make_docx(path, ["placeholder"])
    parts = {}
    with zipfile.ZipFile(path) as source:
        parts = {name: source.read(name) for name in source.namelist()}
    parts["word/document.xml"] = f"<w:document {namespace}><w:body>{body}</w:body></w:document>".encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    return path


def _refused(path: Path, rag: RagConfig, reason: str) -> None:
    with pytest.raises(UnreadableFileError, match=reason) as info:
        read_sections(path, rag)
    assert str(info.value).startswith(f"{path}: ") and "split it or raise the limit" in str(info.value)


def test_pdf_pages_are_bounded_before_they_are_read(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "a.pdf", [["One."], ["Two."], ["Three."]])
    assert len(read_sections(path, RagConfig(max_pages=3))) == 3
    _refused(path, RagConfig(max_pages=2), r"lists more than 2 pages, over rag\.max_pages=2")
    _refused(
        path, RagConfig(max_text_mb=0.000008), r"more than 8e-06 million characters of text, over rag\.max_text_mb"
    )


def test_pdf_text_is_counted_while_a_page_is_read(tmp_path: Path) -> None:
    from tests.reliability.documents import form_pdf

    path = tmp_path / "forms.pdf"
    path.write_bytes(form_pdf(draws=50, chars=1000))  # one page of 50,000 characters
    assert len(read_sections(path, RagConfig(max_text_mb=0.06))[0].text) >= 50_000
    _refused(path, RagConfig(max_text_mb=0.01), r"holds more than 0\.01 million characters of text")


def test_docx_runs_are_counted_as_they_arrive(tmp_path: Path) -> None:
    run = "<w:r><w:t>" + "a" * 100 + "</w:t></w:r>"
    path = _docx_xml(tmp_path / "a.docx", "<w:p>" + run * 30 + "</w:p>")
    assert len(read_sections(path, RagConfig(max_text_mb=0.003))[0].text) == 3000
    _refused(path, RagConfig(max_text_mb=0.0029), r"over rag\.max_text_mb=0\.0029")
    # Every element counts: 30 runs of a w:r and a w:t each, one paragraph, the body and the document.
    assert read_sections(path, RagConfig(max_docx_elements=63))
    _refused(path, RagConfig(max_docx_elements=62), r"more than 62 XML elements, over rag\.max_docx_elements=62")


def test_docx_spanned_cells_count_each_time_they_are_repeated(tmp_path: Path) -> None:
    cell = "<w:tc><w:tcPr><w:gridSpan w:val='64'/></w:tcPr><w:p><w:r><w:t>" + "a" * 100 + "</w:t></w:r></w:p></w:tc>"
    path = _docx_xml(tmp_path / "a.docx", "<w:tbl><w:tr>" + cell + "</w:tr></w:tbl>")
    assert read_sections(path, RagConfig(max_text_mb=0.01))
    _refused(path, RagConfig(max_text_mb=0.006), r"over rag\.max_text_mb=0\.006")


def test_docx_and_markdown_sections_are_bounded(tmp_path: Path) -> None:
    body = "".join(
        f"<w:p><w:pPr><w:pStyle w:val='Heading1'/></w:pPr><w:r><w:t>H{i}</w:t></w:r></w:p>"
        f"<w:p><w:r><w:t>Body {i}.</w:t></w:r></w:p>"
        for i in range(3)
    )
    path = _docx_xml(tmp_path / "a.docx", body)
    assert len(read_sections(path, RagConfig(max_sections=3))) == 3
    _refused(path, RagConfig(max_sections=2), r"more than 2 sections, over rag\.max_sections=2")
    (tmp_path / "a.md").write_text("# A\none\n# B\ntwo\n# C\nthree\n")
    assert len(read_sections(tmp_path / "a.md", RagConfig(max_sections=3))) == 3
    _refused(tmp_path / "a.md", RagConfig(max_sections=2), r"over rag\.max_sections=2")


def test_html_tags_and_text_are_bounded_before_the_text_is_built(tmp_path: Path) -> None:
    path = tmp_path / "a.html"
    path.write_text("<h1>Title</h1><p>" + "word " * 200 + "</p><h2>Next</h2><p>More.</p>")
    assert len(read_sections(path, RagConfig(max_html_tags=4, max_sections=2))) == 2
    _refused(path, RagConfig(max_html_tags=3), r"more than 3 tags, over rag\.max_html_tags=3")
    _refused(path, RagConfig(max_text_mb=0.0005), r"over rag\.max_text_mb=0\.0005")
    _refused(path, RagConfig(max_sections=1), r"over rag\.max_sections=1")


def test_jsonl_records_and_text_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "one two"}\n' * 3)
    assert len(read_sections(path, RagConfig(max_sections=3))) == 3
    _refused(path, RagConfig(max_sections=2), r"more than 2 records, over rag\.max_sections=2")
    _refused(path, RagConfig(max_text_mb=0.00002), r"over rag\.max_text_mb=2e-05")


@pytest.mark.parametrize("key", ["max_pages", "max_docx_elements", "max_html_tags", "max_sections"])
def test_structure_bounds_must_be_positive(key: str) -> None:
    from models.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"rag\.{key}.*should be positive, got 0"):
        RagConfig(**{key: 0})
