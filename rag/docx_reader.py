""".docx text by streaming its XML: body paragraphs and each table's rows (`a | b | c`) in order, with headings.

A whole-tree parser (python-docx) needs about 80 bytes of memory per byte of XML and minutes for a
small file that expands to a large `document.xml`; this reader keeps one body element in memory at a
time, stops at `max_text_chars`, resolves no entities and reads no DTD.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from lxml import etree

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_BODY_PARTS = (W + "p", W + "tbl")
# Style ids of Word's built-in heading styles ("Heading1", "heading 2") and of the document title.
_HEADING = re.compile(r"(?i)(?:heading\s*([1-9])|title)")


class DocxTooLarge(Exception):
    """The document holds more text than the configured bound."""


def docx_sections(path: Path, max_text_chars: int) -> list[tuple[int | None, str]]:
    """Body paragraphs and table rows in document order, as (heading level or None, text) pairs.

    A paragraph styled `Title` is level 0 and `Heading N` level N (its `w:pStyle` value); tables give
    one `a | b | c` line per row, where they stand, so a table stays under its heading.
    """
    with zipfile.ZipFile(path) as archive, archive.open("word/document.xml") as xml:
        blocks: list[tuple[int | None, str]] = []
        size = 0
        events = etree.iterparse(
            xml, events=("end",), tag=_BODY_PARTS, resolve_entities=False, no_network=True, load_dtd=False
        )
        for _, element in events:
            parent = element.getparent()
            if parent is None or parent.tag != W + "body":
                continue  # a paragraph inside a table: read with its table
            if element.tag == W + "p":
                text = _paragraph(element)
                blocks.append((_heading_level(element) if text.strip() else None, text))
                size += len(text)
            else:
                table = _table_rows(element)
                blocks.extend((None, row) for row in table)
                size += sum(len(row) for row in table)
            if size > max_text_chars:
                raise DocxTooLarge(f"holds more than {max_text_chars:,} characters of text")
            # Free what has been read: the body's finished children are never looked at again.
            element.clear()
            while element.getprevious() is not None:
                del parent[0]
    return blocks


def _heading_level(p: etree._Element) -> int | None:
    style = p.find(f"{W}pPr/{W}pStyle")
    match = _HEADING.fullmatch(style.get(W + "val", "")) if style is not None else None
    if match is None:
        return None
    return int(match.group(1)) if match.group(1) else 0


def _paragraph(p: etree._Element) -> str:
    """A paragraph's visible text: runs, tabs and line breaks (what python-docx's Paragraph.text gives)."""
    parts = []
    for node in p.iter(W + "t", W + "tab", W + "br", W + "cr"):
        if node.tag == W + "t":
            parts.append(node.text or "")
        elif node.tag == W + "tab":
            parts.append("\t")
        else:
            parts.append("\n")
    return "".join(parts)


def _table_rows(table: etree._Element) -> list[str]:
    """One line per row; a cell spanning several grid columns is repeated, as python-docx's row.cells does."""
    rows = []
    for tr in table.iterchildren(W + "tr"):
        cells = []
        for tc in tr.iterchildren(W + "tc"):
            text = "\n".join(_paragraph(p) for p in tc.iterchildren(W + "p"))
            span = tc.find(f"{W}tcPr/{W}gridSpan")
            cells.extend([text] * _span(span))
        rows.append(" | ".join(cells))
    return rows


def _span(grid_span: etree._Element | None) -> int:
    if grid_span is None:
        return 1
    try:
        return max(1, min(int(grid_span.get(W + "val", "1")), 64))
    except ValueError:
        return 1
