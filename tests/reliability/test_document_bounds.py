"""Small files that expand while they are read are skipped by name, by the bound they pass, in bounded memory.

Each hostile file is a few kilobytes to a few megabytes on disk: a .docx paragraph of 300 runs of 1 MB
(about 330 KB zipped), a PDF page tree listing one page 90,000 times (4 KB), a PDF page drawing a form
of a million characters 1,000 times (3 KB), two million empty runs,
300,001 HTML tags, 100,001 .jsonl records and Markdown headings. An ingest of them next to the shipped
examples, with the default config, indexes every example and reports each hostile file with its key.
"""

from pathlib import Path

from tests.conftest import EXAMPLES
from tests.reliability.documents import expanding_cases, fanout_pdf, form_pdf, many_runs_docx, write_docx_runs
from tests.reliability.ingest_child import ingest_in_child


def test_expanding_documents_are_skipped_by_name_in_seconds_and_bounded_memory(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    healthy = sorted((EXAMPLES / "docs").iterdir())
    for path in healthy:
        (docs / path.name).write_bytes(path.read_bytes())
    write_docx_runs(docs / "runs.docx", runs=300, run_chars=1_000_000)
    (docs / "fanout-90000.pdf").write_bytes(fanout_pdf(300))
    (docs / "forms.pdf").write_bytes(form_pdf(draws=1000, chars=1_000_000))
    (docs / "many-runs.docx").write_bytes(many_runs_docx(2_000_001))
    for name, data in expanding_cases():
        (docs / name).write_bytes(data)
    hostile = {
        "runs.docx": "holds more than 20 million characters of text, over rag.max_text_mb=20",
        "long-paragraph.docx": "holds more than 20 million characters of text, over rag.max_text_mb=20",
        "fanout-90000.pdf": "its page tree lists more than 5,000 pages, over rag.max_pages=5000",
        "fanout.pdf": "its page tree lists more than 5,000 pages, over rag.max_pages=5000",
        "forms.pdf": "holds more than 20 million characters of text, over rag.max_text_mb=20",
        "many-runs.docx": "holds more than 2,000,000 XML elements, over rag.max_docx_elements=2000000",
        "many-tags.html": "holds more than 300,000 tags, over rag.max_html_tags=300000",
        "many-records.jsonl": "holds more than 100,000 records, over rag.max_sections=100000",
        "many-headings.md": "holds more than 100,000 sections, over rag.max_sections=100000",
    }
    assert set(hostile) == {p.name for p in docs.iterdir()} - {p.name for p in healthy}
    assert max(p.stat().st_size for p in docs.iterdir() if p.name in hostile) < 4_000_000  # small on disk
    result = ingest_in_child(docs, tmp_path / "home")
    skipped = {Path(p).name: reason for p, reason in result["skipped"]}
    assert sorted(Path(p).name for p in result["added"]) == [p.name for p in healthy]
    assert skipped == {name: f"{reason}; split it or raise the limit" for name, reason in hostile.items()}
    assert result["seconds"] < 60, result["seconds"]  # reading them all took hours of parsing and embedding
    assert result["peak_mb"] < 1000, result["peak_mb"]  # the embedder alone takes about 500 MB
