""".docx text by streaming its XML: body paragraphs in order, then each table's rows as `a | b | c`.

A whole-tree parser (python-docx) needs about 80 bytes of memory per byte of XML and minutes for a
small file that expands to a large `document.xml`; this reader keeps one body element in memory at a
time, stops at `max_text_chars`, resolves no entities and reads no DTD.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from lxml import etree

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_BODY_PARTS = (W + "p", W + "tbl")


class DocxTooLarge(Exception):
    """The document holds more text than the configured bound."""


def docx_text(path: Path, max_text_chars: int) -> str:
    """Paragraphs, then table rows, as python-docx's `paragraphs` and `tables` list them."""
    with zipfile.ZipFile(path) as archive, archive.open("word/document.xml") as xml:
        paragraphs: list[str] = []
        rows: list[str] = []
        size = 0
        events = etree.iterparse(
            xml, events=("end",), tag=_BODY_PARTS, resolve_entities=False, no_network=True, load_dtd=False
        )
        for _, element in events:
            parent = element.getparent()
            if parent is None or parent.tag != W + "body":
                continue  # a paragraph inside a table: read with its table
            if element.tag == W + "p":
                paragraphs.append(_paragraph(element))
                size += len(paragraphs[-1])
            else:
                table = _table_rows(element)
                rows.extend(table)
                size += sum(len(row) for row in table)
            if size > max_text_chars:
                raise DocxTooLarge(f"holds more than {max_text_chars:,} characters of text")
            # Free what has been read: the body's finished children are never looked at again.
            element.clear()
            while element.getprevious() is not None:
                del parent[0]
    return "\n".join(paragraphs + rows)


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
