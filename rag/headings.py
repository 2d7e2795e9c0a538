"""Documents cut at their headings: each section keeps the path of headings it sits under (pure functions).

A heading's own line stays in its section's text, so the text shown as a source reads as before. A
heading with no text of its own before the next one (a title straight above its first subsection) is
not a section by itself: its line joins the next section, whose path then names both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SEPARATOR = " > "
_MAX_HEADING = 200  # characters of one heading kept in a path: a paragraph styled as a heading is no title
# An ATX heading (`## Title ##`); setext underlines are not read (`---` is also a rule and front matter).
_ATX = re.compile(r" {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*")
_FENCE = re.compile(r" {0,3}(```|~~~)")


class TooManySections(Exception):
    """A document cut into more sections than the builder's limit."""


@dataclass
class SectionBuilder:
    """Collects (heading path, text) sections as a document's headings and text arrive in order."""

    joiner: str = ""  # put between the pieces of one section's text
    limit: int = 0  # most sections kept (0: no limit); one more raises TooManySections as it closes
    sections: list[tuple[str, str]] = field(default_factory=list)
    _stack: list[tuple[int, str]] = field(default_factory=list)
    _pieces: list[str] = field(default_factory=list)
    _body: bool = False  # the open section holds more than heading lines

    def heading(self, level: int, title: str, piece: str, has_body: bool = False) -> None:
        """A heading of `level` (0 = document title, 1 = h1 ...) whose text is `piece`."""
        title = " ".join(title.split())[:_MAX_HEADING]
        if not title:
            self.text(piece)
            return
        if self._body:
            self._close()
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title))
        self._pieces.append(piece)
        self._body = has_body

    def text(self, piece: str) -> None:
        self._pieces.append(piece)
        self._body = self._body or bool(piece.strip())

    def done(self) -> list[tuple[str, str]]:
        self._close()
        return self.sections

    @property
    def path(self) -> str:
        return SEPARATOR.join(title for _, title in self._stack)

    def _close(self) -> None:
        text = self.joiner.join(self._pieces)
        if text.strip():
            if self.limit and len(self.sections) >= self.limit:
                raise TooManySections(f"more than {self.limit:,} sections")
            self.sections.append((self.path, text))
        self._pieces, self._body = [], False


def markdown_sections(text: str, limit: int = 0) -> list[tuple[str, str]]:
    """(heading path, text) of a Markdown document, cut at its `#` headings outside fenced code."""
    builder = SectionBuilder(limit=limit)
    fence = None
    for line in text.splitlines(keepends=True):
        opening = _FENCE.match(line)
        if opening and (fence is None or opening.group(1) == fence):
            fence = opening.group(1) if fence is None else None
        heading = None if fence or opening else _ATX.fullmatch(line.rstrip("\r\n"))
        if heading:
            builder.heading(len(heading.group(1)), heading.group(2), line)
        else:
            builder.text(line)
    return builder.done()
