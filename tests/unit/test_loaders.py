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
