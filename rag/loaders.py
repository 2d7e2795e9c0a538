"""Read documents into plain-text sections: .txt .md .html .pdf .docx .jsonl.

Each section keeps a locator ("page 3", "line 12") so citations can point inside the file, and its
heading path ("Setup > Wiring"; a pdf page's is "page 3") so chunks can be indexed with their context.
Markdown, HTML and .docx documents are cut into sections at their headings.
A file that cannot be read raises UnreadableFileError with the reason; the caller reports and skips it.
Whatever a parsing library raises on a damaged file becomes that error too: one bad document never
stops an ingest. A file is bounded by its size (rag.max_file_mb) before it is read, and while it is read
by its text, pages, elements and sections (rag.max_text_mb, max_pages, max_docx_elements, max_html_tags,
max_sections): it is refused as soon as it passes one, with the key to raise.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from models.config import RagConfig
from models.errors import InputError
from models.storage import read_utf8
from rag.headings import SectionBuilder, TooManySections, markdown_sections

# pypdf logs every repair it attempts on a damaged file; the skip report already names the file.
logging.getLogger("pypdf").setLevel(logging.ERROR)


class UnreadableFileError(InputError):
    """A document exists but holds no usable text (binary, damaged, encrypted, empty)."""


@dataclass(frozen=True)
class Section:
    text: str
    locator: str = ""
    heading: str = ""  # the headings it sits under, outermost first, joined by " > "


_UNITS = {
    "max_text_mb": "{:g} million characters of text",
    "max_pages": "{:,} pages",
    "max_docx_elements": "{:,} XML elements",
    "max_html_tags": "{:,} tags",
    "max_sections": "{:,} sections",
}


def _over_limit(path: Path, key: str, rag: RagConfig, found: str = "") -> UnreadableFileError:
    """The refusal of a document past the bound `rag.<key>`: what it holds, and the key to raise."""
    value = getattr(rag, key)
    found = found or "holds more than " + _UNITS[key].format(value)
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return UnreadableFileError(f"{path}: {found}, over rag.{key}={shown}; split it or raise the limit")


class _TextBudget:
    """Characters one document may still give; the document is refused as soon as they run out."""

    def __init__(self, path: Path, rag: RagConfig) -> None:
        self.path, self.rag, self.left = path, rag, int(rag.max_text_mb * 1e6)

    def take(self, text: str) -> str:
        self.check(len(text))
        self.left -= len(text)
        return text

    def check(self, chars: int) -> None:
        """Refuse the document if `chars` more characters would pass the bound."""
        if chars > self.left:
            raise _over_limit(self.path, "max_text_mb", self.rag)


def _read_utf8(path: Path, rag: RagConfig) -> str:
    text = read_utf8(path, UnreadableFileError, "a document of this type")
    # Checked before the text is cut into sections; the file itself is bounded by rag.max_file_mb.
    if len(text) > rag.max_text_mb * 1e6:
        found = f"holds {len(text) / 1e6:.1f} million characters of text"
        raise _over_limit(path, "max_text_mb", rag, found)
    return text


def read_text(path: Path, rag: RagConfig) -> list[Section]:
    return [Section(_read_utf8(path, rag))]


def read_markdown(path: Path, rag: RagConfig) -> list[Section]:
    try:
        sections = markdown_sections(_read_utf8(path, rag), rag.max_sections)
    except TooManySections:
        raise _over_limit(path, "max_sections", rag) from None
    return [Section(text, heading=heading) for heading, text in sections]


_MARK = "\ue000"  # a private-use character marking where each heading starts in the extracted text


def read_html(path: Path, rag: RagConfig) -> list[Section]:
    from bs4 import BeautifulSoup

    raw = read_utf8(path, UnreadableFileError, "a document of this type").replace(_MARK, "")
    # Every element opens with "<" (not "</"): the parsed tree, about a kilobyte per element, is bounded
    # before it is built.
    if raw.count("<") - raw.count("</") > rag.max_html_tags:
        raise _over_limit(path, "max_html_tags", rag)
    soup = BeautifulSoup(raw, "html.parser")
    del raw
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    budget = _TextBudget(path, rag)
    for piece in soup.strings:  # the text is measured before it is joined into one string
        budget.take(piece)
    headings = soup.find_all(re.compile(r"^h[1-6]$"))
    for tag in headings:
        tag.insert_before(_MARK)
    first, *parts = soup.get_text("\n").split(_MARK)
    builder = SectionBuilder(limit=rag.max_sections)
    try:
        builder.text(_collapse(first))
        for tag, part in zip(headings, parts):
            title, part = tag.get_text(" ").strip(), _collapse(part)
            own = tag.get_text("\n").strip()
            builder.heading(int(tag.name[1]), title, part, has_body=bool(part.strip()[len(own) :].strip()))
        return [Section(text, heading=heading) for heading, text in builder.done()]
    except TooManySections:
        raise _over_limit(path, "max_sections", rag) from None


def _collapse(text: str) -> str:
    return re.sub(r"\n\s*\n+", "\n\n", text)


def read_pdf(path: Path, rag: RagConfig) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            raise UnreadableFileError(f"{path}: the PDF is encrypted; save an unencrypted copy")
        # pypdf builds an object for every page the tree lists (a page listed twice, twice) before the
        # first is read: the tree is counted first, and text is bounded as each page gives it.
        _count_pages(path, reader.root_object, rag)
        budget = _TextBudget(path, rag)
        return [Section(_page_text(page, budget), f"page {n}", f"page {n}") for n, page in enumerate(reader.pages, 1)]
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise UnreadableFileError(f"{path}: damaged PDF ({exc})") from None


def _count_pages(path: Path, root: Any, rag: RagConfig) -> None:
    """Pages the tree lists as pypdf will list them (a page listed twice counts twice), without building any.

    The walk stops past rag.max_pages pages or past twice as many tree nodes (a tree of empty or
    looping /Pages nodes); a real tree has far fewer inner nodes than pages.
    """
    from pypdf.generic import ArrayObject, DictionaryObject

    pages, nodes, most = 0, 0, rag.max_pages
    stack: list[Iterator[Any]] = [iter([root["/Pages"]])]
    while stack:
        kid = next(stack[-1], None)
        if kid is None:
            stack.pop()
            continue
        node = kid.get_object()
        if not isinstance(node, DictionaryObject) or not node:
            continue  # pypdf skips these too
        nodes += 1
        # Indexing resolves indirect values; a node without /Type is a page unless it has /Kids.
        kind = node["/Type"] if "/Type" in node else "/Pages" if "/Kids" in node else "/Page"
        if kind == "/Page":
            pages += 1
        elif kind == "/Pages" and "/Kids" in node and isinstance(kids := node["/Kids"], ArrayObject):
            stack.append(iter(kids))
        if pages > most:
            raise _over_limit(path, "max_pages", rag, f"its page tree lists more than {most:,} pages")
        if nodes > 2 * most + 64:
            raise _over_limit(path, "max_pages", rag, f"its page tree holds more than {2 * most + 64:,} nodes")


def _page_text(page: Any, budget: _TextBudget) -> str:
    """A page's text, counted as pypdf gives its pieces: one page drawing a form 5,000 times is stopped early."""
    arrived = 0

    def count(text: str, *_: Any) -> None:
        nonlocal arrived
        arrived += len(text)
        # Raised inside a form, pypdf drops that form's text and goes on; its next piece raises again.
        budget.check(arrived)

    return budget.take(page.extract_text(visitor_text=count) or "")


def read_docx(path: Path, rag: RagConfig) -> list[Section]:
    from lxml.etree import XMLSyntaxError

    from rag.docx_reader import DocxTooLarge, docx_sections

    try:
        blocks = docx_sections(path, int(rag.max_text_mb * 1e6), rag.max_docx_elements)
    except (zipfile.BadZipFile, KeyError, XMLSyntaxError, EOFError) as exc:
        raise UnreadableFileError(f"{path}: damaged .docx ({exc})") from None
    except DocxTooLarge as exc:
        raise _over_limit(path, exc.key, rag) from None
    builder = SectionBuilder(joiner="\n", limit=rag.max_sections)
    try:
        for level, text in blocks:
            if level is None:
                builder.text(text)
            else:
                builder.heading(level, text, text)
        return [Section(text, heading=heading) for heading, text in builder.done()]
    except TooManySections:
        raise _over_limit(path, "max_sections", rag) from None


def read_jsonl(path: Path, rag: RagConfig) -> list[Section]:
    field = rag.jsonl_text_field
    sections: list[Section] = []
    budget = _TextBudget(path, rag)
    # Not _read_utf8: the file's JSON markup is no text, only the records' fields are counted.
    for number, line in enumerate(read_utf8(path, UnreadableFileError, "a document of this type").splitlines(), 1):
        if not line.strip():
            continue
        if len(sections) >= rag.max_sections:
            raise _over_limit(path, "max_sections", rag, f"holds more than {rag.max_sections:,} records")
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UnreadableFileError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise UnreadableFileError(
                f"{path}:{number}: each line should be an object with a string {field!r} field "
                "(change rag.jsonl_text_field to use another field)"
            )
        sections.append(Section(budget.take(record[field]), f"line {number}"))
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


def check_file_size(path: Path, rag: RagConfig) -> int:
    """The file's size in bytes; over rag.max_file_mb it raises UnreadableFileError, before a byte is read."""
    size = path.stat().st_size
    if size > rag.max_file_mb * 1e6:
        raise UnreadableFileError(
            f"{path}: {size / 1e6:.1f} MB, over rag.max_file_mb={rag.max_file_mb:g}; raise it to index this file"
        )
    return size


def read_sections(path: Path, rag: RagConfig | None = None) -> list[Section]:
    """Sections of non-empty text; an empty, unreadable, damaged or oversized file raises UnreadableFileError."""
    rag = rag or RagConfig()
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise UnreadableFileError(f"{path}: unsupported type; supported: {', '.join(sorted(READERS))}")
    try:
        check_file_size(path, rag)
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
        raise _over_limit(path, "max_text_mb", rag, f"holds {chars / 1e6:.1f} million characters of text")
    if len(sections) > rag.max_sections:
        raise _over_limit(path, "max_sections", rag, f"holds {len(sections):,} sections")
    return sections


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")
