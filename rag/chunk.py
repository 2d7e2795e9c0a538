"""Token-aware chunking with overlap, and the context line a chunk is indexed with: pure functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

_SENTENCE_END = ".!?。"


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int  # character offsets into the section text
    end: int


def sentence_boundaries(text: str, offsets: list[tuple[int, int]]) -> set[int]:
    """Indices of tokens after which a sentence or a line ends."""
    ends = set()
    for i, (_, end) in enumerate(offsets):
        following = text[end : offsets[i + 1][0]] if i + 1 < len(offsets) else "\n"
        if "\n" in following or (end > 0 and text[end - 1] in _SENTENCE_END and following[:1].isspace()):
            ends.add(i)
    return ends


def chunk_spans(text: str, offsets: list[tuple[int, int]], size: int, overlap: int) -> list[tuple[int, int]]:
    """Windows of at most `size` tokens, neighbours sharing about `overlap` tokens, as (token_start, token_stop).

    A window ends at the last sentence boundary in its final quarter when there is one, so chunks
    rarely cut a sentence in half; overlap keeps a fact that straddles two windows whole in one.
    """
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(f"need 0 <= overlap < size, got size={size} overlap={overlap}")
    boundaries = sentence_boundaries(text, offsets)
    spans: list[tuple[int, int]] = []
    start, total = 0, len(offsets)
    while start < total:
        stop = min(start + size, total)
        if stop < total:
            floor = start + max(1, (3 * size) // 4)
            best = max((i for i in boundaries if floor <= i < stop), default=None)
            if best is not None:
                stop = best + 1
        spans.append((start, stop))
        if stop >= total:
            break
        start = max(stop - overlap, start + 1)
    return spans


def chunk_text(text: str, offsets: list[tuple[int, int]], size: int, overlap: int) -> list[Chunk]:
    """Cut `text` into chunks; `offsets` are the (start, end) characters of each token, in order."""
    offsets = [(s, e) for s, e in offsets if e > s]
    chunks = []
    for first, stop in chunk_spans(text, offsets, size, overlap):
        start, end = offsets[first][0], offsets[stop - 1][1]
        piece = text[start:end].strip()
        if piece:
            chunks.append(Chunk(text=piece, start=start, end=end))
    return chunks


def chunk_long_text(
    text: str, tokenize: Callable[[str], list[tuple[int, int]]], size: int, overlap: int, window: int = 200_000
) -> list[Chunk]:
    """`chunk_text` for text of any length, tokenising at most `window` characters at a time.

    Token offsets cost about a hundred bytes each, so a whole 20 MB section would take gigabytes. Each
    window is cut at whitespace and the next one restarts where its last (possibly cut short) chunk
    began, so the chunks are the ones a single pass would make (the tokenizer splits on whitespace).
    """
    chunks: list[Chunk] = []
    base = 0
    while True:
        end = _window_end(text, base, window)
        piece = text[base:end]
        offsets = [(s, e) for s, e in tokenize(piece) if e > s]
        spans = chunk_spans(piece, offsets, size, overlap) if offsets else []
        final = end >= len(text) or len(spans) < 2
        for first, stop in spans if final else spans[:-1]:
            start, stop_char = base + offsets[first][0], base + offsets[stop - 1][1]
            if body := text[start:stop_char].strip():
                chunks.append(Chunk(text=body, start=start, end=stop_char))
        if final:
            if end < len(text):  # a window too short for two chunks: carry on after it
                base = end
                continue
            return chunks
        base += offsets[spans[-1][0]][0]


def _window_end(text: str, base: int, window: int) -> int:
    end = base + window
    if end >= len(text):
        return len(text)
    cut = max(text.rfind(" ", base + window // 2, end), text.rfind("\n", base + window // 2, end))
    return cut if cut > base else end


def document_title(path: str) -> str:
    """A document's title as its file name says it: `1973-oil-crisis.txt` -> `1973 oil crisis`."""
    stem = path.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return " ".join(stem.replace("_", " ").replace("-", " ").split()) or stem


def context_line(title: str, heading: str) -> str:
    """What a chunk is indexed with besides its text: `title > heading > subheading` (pdf: `title > page 3`)."""
    return " > ".join(part for part in (title, heading) if part)


def with_context(context: str, text: str) -> str:
    """The text embedded and scored for a chunk: its context line, a blank line, then the chunk."""
    return f"{context}\n\n{text}" if context else text


def fit_context(context: str, offsets: list[tuple[int, int]], budget: int) -> str:
    """`context` cut after its first `budget` tokens (`offsets` are its tokens' character spans)."""
    offsets = [(s, e) for s, e in offsets if e > s]
    if budget <= 0:
        return ""
    return context if len(offsets) <= budget else context[: offsets[budget - 1][1]]
