"""Seeded damage for every supported document type: the cases the fuzz suite feeds to the loaders and ingest.

Each case is (file name, bytes). Seeds are the shipped example documents plus a few made here; damage is
truncation, byte flips, zip-level damage for .docx (broken central directory, missing or cut XML, a
decompression bomb), and nesting and size extremes.
"""

from __future__ import annotations

import io
import random
import zipfile
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import EXAMPLES

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


def write_cases(folder: Path, count: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in cases(count, seed):
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths
