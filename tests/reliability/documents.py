"""Seeded damage for every supported document type: the cases the fuzz suite feeds to the loaders and ingest.

Each case is (file name, bytes). Seeds are the shipped example documents plus a few made here; damage is
truncation, byte flips, zip-level damage for .docx (broken central directory, missing or cut XML, a
decompression bomb), nesting and size extremes, and small files that expand past a bound while they are
read (a PDF page tree listing one page thousands of times, a PDF page drawing one form thousands of
times, a .docx paragraph of many large runs, millions of XML elements, many HTML tags, records or headings).
"""

from __future__ import annotations

import io
import random
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import EXAMPLES
from tests.docmaker import pdf_bytes

SEEDS = {
    ".txt": (EXAMPLES / "docs" / "borrowing-rules.txt").read_bytes(),
    ".md": (EXAMPLES / "docs" / "library-cards.md").read_bytes(),
    ".html": (EXAMPLES / "docs" / "hours-and-branches.html").read_bytes(),
    ".pdf": (EXAMPLES / "docs" / "printing-and-wifi.pdf").read_bytes(),
    ".docx": (EXAMPLES / "docs" / "meeting-rooms.docx").read_bytes(),
    ".jsonl": (EXAMPLES / "docs" / "events.jsonl").read_bytes(),
}


def truncated(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(0, len(data))]


def flipped(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 24)):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def docx_with(document_xml: bytes) -> bytes:
    """The example .docx with its `word/document.xml` replaced."""
    source = zipfile.ZipFile(io.BytesIO(SEEDS[".docx"]))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in source.namelist():
            archive.writestr(name, document_xml if name == "word/document.xml" else source.read(name))
    return out.getvalue()


NAMESPACE = b'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


def write_docx_runs(path: Path, runs: int, run_chars: int) -> Path:
    """A .docx whose body is one paragraph of `runs` runs of `run_chars` characters each, streamed into the zip.

    Repeated text deflates about a thousandfold: 300 runs of 1 MB make a file of about 300 KB.
    """
    source = zipfile.ZipFile(io.BytesIO(SEEDS[".docx"]))
    run = b"<w:r><w:t>" + b"a" * run_chars + b"</w:t></w:r>"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in source.namelist():
            if name != "word/document.xml":
                archive.writestr(name, source.read(name))
        with archive.open("word/document.xml", "w", force_zip64=True) as xml:
            xml.write(b"<w:document " + NAMESPACE + b"><w:body><w:p>")
            for _ in range(runs):
                xml.write(run)
            xml.write(b"</w:p></w:body></w:document>")
    return path


def fanout_pdf(fan: int) -> bytes:
    """A PDF whose root /Pages node lists one inner node `fan` times, which lists one page `fan` times.

    A few kilobytes that pypdf reads as fan * fan pages.
    """
    stream = b"BT /F1 11 Tf 50 760 Td (The same page again.) Tj ET"
    return _pdf(
        b"<< /Type /Pages /Kids [" + b"3 0 R " * fan + b"] /Count %d >>" % (fan * fan),
        b"<< /Type /Pages /Parent 2 0 R /Kids [" + b"4 0 R " * fan + b"] /Count %d >>" % fan,
        b"<< /Type /Page /Parent 3 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 6 0 R >> >> "
        b"/Contents 5 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
    )


def form_pdf(draws: int, chars: int) -> bytes:
    """A one-page PDF that draws one form `draws` times, the form showing `chars` characters (deflated).

    A few kilobytes whose one page pypdf reads as draws * chars characters.
    """
    page = b" ".join([b"/X0 Do"] * draws)
    form = zlib.compress(b"BT /F1 11 Tf 50 700 Td (" + b"a" * chars + b") Tj ET", 9)
    return _pdf(
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 6 0 R >> "
        b"/XObject << /X0 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(page) + page + b"\nendstream",
        b"<< /Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources << /Font << /F1 6 0 R >> >> "
        b"/Filter /FlateDecode /Length %d >>\nstream\n" % len(form) + form + b"\nendstream",
    )


def _pdf(*objects: bytes) -> bytes:
    """A PDF written by hand with a correct xref table: the catalog, `objects` as 2 to 5, Helvetica as 6."""
    catalog, font = b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
    return pdf_bytes([catalog, *objects, font])


def many_runs_docx(runs: int) -> bytes:
    """A .docx of one paragraph of `runs` empty runs: elements without text, a few kilobytes per million."""
    empty = b"<w:p>" + b"<w:r/>" * runs + b"</w:p>"
    return docx_with(b"<w:document " + NAMESPACE + b"><w:body>" + empty + b"</w:body></w:document>")


def expanding_cases() -> Iterator[tuple[str, bytes]]:
    """Small files past a default bound (rag.max_pages, max_text_mb, max_html_tags, max_sections) once read.

    Two million empty .docx runs (many_runs_docx, past rag.max_docx_elements) take seconds to count, so
    the fuzz suite checks them under a lower bound and tests/reliability/test_document_bounds.py at the default.
    """
    yield "fanout.pdf", fanout_pdf(80)  # 6,400 pages, over 5,000
    runs = b"<w:r><w:t>" + b"a" * 1_000_000 + b"</w:t></w:r>"
    body = b"<w:p>" + runs * 21 + b"</w:p>"  # 21 million characters in one paragraph
    yield (
        "long-paragraph.docx",
        docx_with(b"<w:document " + NAMESPACE + b"><w:body>" + body + b"</w:body></w:document>"),
    )
    yield "many-tags.html", b"<p>" + b"<i>" * 300_001 + b"text</p>"
    yield "many-records.jsonl", b'{"text": "a"}\n' * 100_001
    yield "many-headings.md", b"# h\nbody\n" * 100_001


def docx_cases(rng: random.Random) -> Iterator[tuple[str, bytes]]:
    xml = zipfile.ZipFile(io.BytesIO(SEEDS[".docx"])).read("word/document.xml")
    yield "cut-xml.docx", docx_with(xml[: rng.randrange(len(xml) // 2, len(xml))])
    yield "flipped-xml.docx", docx_with(flipped(xml, rng))
    data = SEEDS[".docx"]
    cd = data.rfind(b"PK\x01\x02")
    yield "broken-central-directory.docx", data[:cd] + flipped(data[cd:], rng)
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name in source.namelist():
            if name != "word/document.xml":
                archive.writestr(name, source.read(name))
    yield "no-document-xml.docx", out.getvalue()
    head, _, _ = xml.partition(b"<w:body>")
    deep = b"<w:p>" * 5000 + b"<w:r><w:t>deep</w:t></w:r>" + b"</w:p>" * 5000
    yield "deep-nesting.docx", docx_with(head + b"<w:body>" + deep + b"</w:body></w:document>")
    entity = b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    yield "external-entity.docx", docx_with(entity + xml.partition(b"?>")[2].replace(b"Meeting", b"&x;"))


def extreme_cases() -> Iterator[tuple[str, bytes]]:
    yield "deep.html", b"<div>" * 100_000 + b"text" + b"</div>" * 100_000
    yield "deep.jsonl", b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    yield "one-long-line.txt", b"word " * 20_000
    yield "late-nul.txt", b"real text here. " * 1000 + b"\x00\x00hidden\x00" + b" more text."
    yield "empty.md", b""
    yield "only-space.txt", b" \n\t\n"
    yield "not-utf8.txt", "caf\u00e9 ".encode("latin-1") * 10
    yield "binary.pdf", bytes(range(256)) * 64
    yield "text-named.docx", b"this is not a zip file"


def cases(count: int, seed: int) -> Iterator[tuple[str, bytes]]:
    """`count` seeded truncations and byte flips spread over every type, then the targeted cases."""
    rng = random.Random(seed)
    kinds = sorted(SEEDS)
    for i in range(count):
        suffix = kinds[i % len(kinds)]
        damage = truncated if i % 2 else flipped
        yield f"{damage.__name__}-{i:04d}{suffix}", damage(SEEDS[suffix], rng)
    yield from docx_cases(rng)
    yield from extreme_cases()
    yield from expanding_cases()


def write_cases(folder: Path, count: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in cases(count, seed):
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths
