""".docx text by streaming its XML: body paragraphs and each table's rows (`a | b | c`) in order, with headings.

A whole-tree parser (python-docx) needs about 80 bytes of memory per byte of XML and minutes for a
small file that expands to a large `document.xml`. This reader keeps only the elements still open (and
the style of each open paragraph and cell): a run's text is moved into its paragraph's list of pieces
as the run ends, and a cell, row or paragraph becomes a string as it ends, so one paragraph of many
large runs or a table of a million cells is held as text, never as a tree. Characters are counted as
they arrive and every element as it ends, against `max_text_chars` and `max_elements`
(rag.max_text_mb, rag.max_docx_elements). It resolves no entities and reads no DTD.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from lxml import etree

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_TEXT = {W + "t": None, W + "tab": "\t", W + "br": "\n", W + "cr": "\n"}  # None: the element's own text
# Kept until their owner ends: a paragraph's style (its heading level) and a cell's span; only the first.
_KEPT = {W + "pPr": W + "p", W + "pStyle": W + "pPr", W + "tcPr": W + "tc", W + "gridSpan": W + "tcPr"}
_READ = {*_TEXT, *_KEPT, W + "p", W + "tc", W + "tr", W + "tbl", W + "body"}
# Style ids of Word's built-in heading styles ("Heading1", "heading 2") and of the document title.
_HEADING = re.compile(r"(?i)(?:heading\s*([1-9])|title)")


class DocxTooLarge(Exception):
    """The document holds more than a configured bound; `key` names it (max_text_mb or max_docx_elements)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def docx_sections(path: Path, max_text_chars: int, max_elements: int) -> list[tuple[int | None, str]]:
    """Body paragraphs and table rows in document order, as (heading level or None, text) pairs.

    A paragraph styled `Title` is level 0 and `Heading N` level N (its `w:pStyle` value); tables give
    one `a | b | c` line per row, where they stand, so a table stays under its heading. A cell
    spanning several grid columns is repeated, as python-docx's row.cells does.
    """
    with zipfile.ZipFile(path) as archive, archive.open("word/document.xml") as xml:
        reader = _Reader(max_text_chars)
        events = etree.iterparse(xml, events=("end",), resolve_entities=False, no_network=True, load_dtd=False)
        for count, (_, element) in enumerate(events, 1):
            if count > max_elements:
                raise DocxTooLarge("max_docx_elements")
            if element.tag in _READ:
                reader.end(element)
            elif (parent := element.getparent()) is not None:
                parent.remove(element)  # run properties, bookmarks...: nothing to read, nothing to keep
    return reader.blocks


class _Reader:
    """What the elements read so far have given: finished blocks, and the text of the open ones."""

    def __init__(self, max_text_chars: int) -> None:
        self.blocks: list[tuple[int | None, str]] = []
        self.left = max_text_chars  # characters the document may still give, repeats of spanned cells included
        # Keyed by the open element: a paragraph's pieces, a cell's paragraphs, a row's cells, a table's rows.
        self.parts: dict[etree._Element, list[str]] = {}

    def end(self, element: etree._Element) -> None:
        tag, parent = element.tag, element.getparent()
        if tag in _TEXT:
            piece = _TEXT[tag]
            piece = element.text if piece is None else piece
            if piece:
                self._paragraph_piece(element, piece)
        elif tag == W + "p":
            self._paragraph(element, parent)
        elif tag == W + "tc":
            if parent is not None and parent.tag == W + "tr":
                self._cell(element, parent)
        elif tag == W + "tr":
            row = " | ".join(self.parts.pop(element, []))
            if parent is not None and parent.tag == W + "tbl":
                self.parts.setdefault(parent, []).append(row)
        elif tag == W + "tbl":
            rows = self.parts.pop(element, [])
            if parent is not None and parent.tag == W + "body":
                self.blocks.extend((None, row) for row in rows)
        elif parent is not None and _KEPT.get(tag) == parent.tag and parent.find(tag) is element:
            return
        if parent is not None and tag != W + "body":
            parent.remove(element)  # what it gave is in self.parts or self.blocks now

    def _take(self, chars: int) -> None:
        self.left -= chars
        if self.left < 0:
            raise DocxTooLarge("max_text_mb")

    def _paragraph_piece(self, element: etree._Element, piece: str) -> None:
        paragraph = next(element.iterancestors(W + "p"), None)
        if paragraph is not None:  # text outside any paragraph is not shown by Word either
            self._take(len(piece))
            self.parts.setdefault(paragraph, []).append(piece)

    def _paragraph(self, p: etree._Element, parent: etree._Element | None) -> None:
        text = "".join(self.parts.pop(p, []))
        outer = next(p.iterancestors(W + "p"), None)
        if outer is not None:  # a paragraph inside another one reads as part of it, where it stands
            self.parts.setdefault(outer, []).append(text)
        elif parent is not None and parent.tag == W + "body":
            self.blocks.append((_heading_level(p) if text.strip() else None, text))
        elif parent is not None and parent.tag == W + "tc":
            self.parts.setdefault(parent, []).append(text)

    def _cell(self, tc: etree._Element, tr: etree._Element) -> None:
        text = "\n".join(self.parts.pop(tc, []))
        span = _span(tc.find(f"{W}tcPr/{W}gridSpan"))
        # A repeat is counted before it is made: a cell spanning 64 columns would otherwise turn text
        # within the bound into 64 times as much. Its own text was counted as it arrived.
        self._take((span - 1) * len(text) + 3 * span)  # 3: the " | " between cells
        self.parts.setdefault(tr, []).extend([text] * span)


def _heading_level(p: etree._Element) -> int | None:
    style = p.find(f"{W}pPr/{W}pStyle")
    match = _HEADING.fullmatch(style.get(W + "val", "")) if style is not None else None
    if match is None:
        return None
    return int(match.group(1)) if match.group(1) else 0


def _span(grid_span: etree._Element | None) -> int:
    if grid_span is None:
        return 1
    try:
        return max(1, min(int(grid_span.get(W + "val", "1")), 64))
    except ValueError:
        return 1
