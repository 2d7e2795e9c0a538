"""Read documents into plain-text sections: .txt .md .html .pdf .docx .jsonl.

Each section keeps a locator ("page 3", "line 12") so citations can point inside the file, and its
heading path ("Setup > Wiring"; a pdf page's is "page 3") so chunks can be indexed with their context.
Markdown, HTML and .docx documents are cut into sections at their headings.
A file that cannot be read raises UnreadableFileError with the reason; the caller reports and skips it.
Whatever a parsing library raises on a damaged file becomes that error too: one bad document never
stops an ingest. Files and their extracted text are bounded (rag.max_file_mb, rag.max_text_mb).
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from models.config import RagConfig
from models.errors import InputError
from models.storage import read_utf8
from rag.headings import SectionBuilder, markdown_sections

# pypdf logs every repair it attempts on a damaged file; the skip report already names the file.
logging.getLogger("pypdf").setLevel(logging.ERROR)


class UnreadableFileError(InputError):
    """A document exists but holds no usable text (binary, damaged, encrypted, empty)."""


@dataclass(frozen=True)
class Section:
    text: str
    locator: str = ""
    heading: str = ""  # the headings it sits under, outermost first, joined by " > "


def _read_utf8(path: Path) -> str:
    return read_utf8(path, UnreadableFileError, "a document of this type")


def read_text(path: Path, _rag: RagConfig) -> list[Section]:
    return [Section(_read_utf8(path))]


def read_markdown(path: Path, _rag: RagConfig) -> list[Section]:
    return [Section(text, heading=heading) for heading, text in markdown_sections(_read_utf8(path))]


_MARK = "\ue000"  # a private-use character marking where each heading starts in the extracted text


def read_html(path: Path, _rag: RagConfig) -> list[Section]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_read_utf8(path).replace(_MARK, ""), "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    headings = soup.find_all(re.compile(r"^h[1-6]$"))
    for tag in headings:
        tag.insert_before(_MARK)
    first, *parts = soup.get_text("\n").split(_MARK)
    builder = SectionBuilder()
    builder.text(_collapse(first))
    for tag, part in zip(headings, parts):
        title, part = tag.get_text(" ").strip(), _collapse(part)
        own = tag.get_text("\n").strip()
        builder.heading(int(tag.name[1]), title, part, has_body=bool(part.strip()[len(own) :].strip()))
    return [Section(text, heading=heading) for heading, text in builder.done()]


def _collapse(text: str) -> str:
    return re.sub(r"\n\s*\n+", "\n\n", text)


def read_pdf(path: Path, _rag: RagConfig) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            raise UnreadableFileError(f"{path}: the PDF is encrypted; save an unencrypted copy")
        return [Section(page.extract_text() or "", f"page {n}", f"page {n}") for n, page in enumerate(reader.pages, 1)]
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise UnreadableFileError(f"{path}: damaged PDF ({exc})") from None


def read_docx(path: Path, rag: RagConfig) -> list[Section]:
    from lxml.etree import XMLSyntaxError

    from rag.docx_reader import DocxTooLarge, docx_sections

    try:
        blocks = docx_sections(path, int(rag.max_text_mb * 1e6))
    except (zipfile.BadZipFile, KeyError, XMLSyntaxError, EOFError) as exc:
        raise UnreadableFileError(f"{path}: damaged .docx ({exc})") from None
    except DocxTooLarge as exc:
        raise UnreadableFileError(f"{path}: {exc}, over rag.max_text_mb; split it or raise the limit") from None
    builder = SectionBuilder(joiner="\n")
    for level, text in blocks:
        if level is None:
            builder.text(text)
        else:
            builder.heading(level, text, text)
    return [Section(text, heading=heading) for heading, text in builder.done()]


def read_jsonl(path: Path, rag: RagConfig) -> list[Section]:
    field = rag.jsonl_text_field
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


READERS: dict[str, Callable[[Path, RagConfig], list[Section]]] = {
    ".txt": read_text,
    ".md": read_markdown,
    ".markdown": read_markdown,
    ".rst": read_text,
    ".html": read_html,
    ".htm": read_html,
    ".pdf": read_pdf,
    ".docx": read_docx,
    ".jsonl": read_jsonl,
}


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in READERS


def read_sections(path: Path, rag: RagConfig | None = None) -> list[Section]:
    """Sections of non-empty text; an empty, unreadable, damaged or oversized file raises UnreadableFileError."""
    rag = rag or RagConfig()
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise UnreadableFileError(f"{path}: unsupported type; supported: {', '.join(sorted(READERS))}")
    try:
        size = path.stat().st_size
        if size > rag.max_file_mb * 1e6:
            raise UnreadableFileError(
                f"{path}: {size / 1e6:.1f} MB, over rag.max_file_mb={rag.max_file_mb:g}; raise it to index this file"
            )
        sections = reader(path, rag)
    except UnreadableFileError:
        raise
    except OSError as exc:
        raise UnreadableFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except Exception as exc:  # a parser's own failure on a damaged file (pypdf, lxml, bs4, ...)
        raise UnreadableFileError(f"{path}: cannot be parsed ({type(exc).__name__}: {_short(exc)})") from None
    # NUL bytes past the binary sniff (the first 8 KiB) are no text; they would reach prompts and SQLite.
    sections = [replace(s, text=s.text.replace("\x00", "")) for s in sections]
    sections = [s for s in sections if s.text.strip()]
    if not sections:
        raise UnreadableFileError(f"{path}: holds no text")
    chars = sum(len(s.text) for s in sections)
    if chars > rag.max_text_mb * 1e6:
        raise UnreadableFileError(
            f"{path}: holds {chars / 1e6:.1f} million characters of text, over rag.max_text_mb={rag.max_text_mb:g}; "
            "split it or raise the limit"
        )
    return sections


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")
