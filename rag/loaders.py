"""Read documents into plain-text sections: .txt .md .html .pdf .docx .jsonl.

Each section keeps a locator ("page 3", "line 12") so citations can point inside the file.
A file that cannot be read raises UnreadableFileError with the reason; the caller reports and skips it.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from models.errors import InputError
from models.storage import read_utf8


class UnreadableFileError(InputError):
    """A document exists but holds no usable text (binary, damaged, encrypted, empty)."""


@dataclass(frozen=True)
class Section:
    text: str
    locator: str = ""


def _read_utf8(path: Path) -> str:
    return read_utf8(path, UnreadableFileError, "a document of this type")


def read_text(path: Path, _field: str) -> list[Section]:
    return [Section(_read_utf8(path))]


def read_html(path: Path, _field: str) -> list[Section]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_read_utf8(path), "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    text = soup.get_text("\n")
    return [Section(re.sub(r"\n\s*\n+", "\n\n", text))]


def read_pdf(path: Path, _field: str) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            raise UnreadableFileError(f"{path}: the PDF is encrypted; save an unencrypted copy")
        return [Section(page.extract_text() or "", f"page {n}") for n, page in enumerate(reader.pages, 1)]
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise UnreadableFileError(f"{path}: damaged PDF ({exc})") from None


def read_docx(path: Path, _field: str) -> list[Section]:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(str(path))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise UnreadableFileError(f"{path}: damaged .docx ({exc})") from None
    lines = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            lines.append(" | ".join(cell.text for cell in row.cells))
    return [Section("\n".join(lines))]


def read_jsonl(path: Path, field: str) -> list[Section]:
    sections = []
    for number, line in enumerate(_read_utf8(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UnreadableFileError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise UnreadableFileError(
                f"{path}:{number}: each line should be an object with a string {field!r} field "
                "(change rag.jsonl_text_field to use another field)"
            )
        sections.append(Section(record[field], f"line {number}"))
    return sections


READERS: dict[str, Callable[[Path, str], list[Section]]] = {
    ".txt": read_text,
    ".md": read_text,
    ".markdown": read_text,
    ".rst": read_text,
    ".html": read_html,
    ".htm": read_html,
    ".pdf": read_pdf,
    ".docx": read_docx,
    ".jsonl": read_jsonl,
}


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in READERS


def read_sections(path: Path, jsonl_text_field: str = "text") -> list[Section]:
    """Sections of non-empty text; an empty or unreadable file raises UnreadableFileError."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise UnreadableFileError(f"{path}: unsupported type; supported: {', '.join(sorted(READERS))}")
    try:
        sections = [s for s in reader(path, jsonl_text_field) if s.text.strip()]
    except OSError as exc:
        raise UnreadableFileError(f"{path}: cannot be read ({exc.strerror})") from None
    if not sections:
        raise UnreadableFileError(f"{path}: holds no text")
    return sections
