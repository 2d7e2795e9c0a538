"""Sections carry their heading path: md `#` lines, html h1-h6, docx Heading styles, pdf pages."""

from pathlib import Path

from rag.chunk import context_line, document_title, fit_context, with_context
from rag.headings import markdown_sections
from rag.loaders import read_sections
from tests.docmaker import make_pdf


def test_markdown_sections_follow_the_heading_tree() -> None:
    text = "Intro line.\n# Manual\n\n## Setup\nPlug it in.\n### Wiring\nRed to red.\n## Care ##\nDust it.\n"
    assert markdown_sections(text) == [
        ("", "Intro line.\n"),
        ("Manual > Setup", "# Manual\n\n## Setup\nPlug it in.\n"),  # the bare title joins its first subsection
        ("Manual > Setup > Wiring", "### Wiring\nRed to red.\n"),
        ("Manual > Care", "## Care ##\nDust it.\n"),
    ]
    assert "".join(text for _, text in markdown_sections(text)) == text  # nothing lost or reordered


def test_hashes_in_code_fences_and_without_a_space_are_no_headings() -> None:
    text = "# Top\n```sh\n# not a heading\n```\n#hashtag\nBody.\n"
    assert markdown_sections(text) == [("Top", text)]


def test_md_sections_through_the_loader(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Title\nBody\n## Sub\nMore\n")
    sections = read_sections(tmp_path / "a.md")
    assert [(s.heading, s.text, s.locator) for s in sections] == [
        ("Title", "# Title\nBody\n", ""),
        ("Title > Sub", "## Sub\nMore\n", ""),
    ]


def test_html_headings(tmp_path: Path) -> None:
    (tmp_path / "a.html").write_text(
        "<html><head><title>T</title></head><body><p>Lead.</p><h1>Branches</h1><h2>East <b>side</b></h2>"
        "<p>Closed Mondays.</p><h2>West</h2><p>Open daily.</p><h1>Fees</h1><p>None.</p></body></html>"
    )
    sections = read_sections(tmp_path / "a.html")
    assert [s.heading for s in sections] == ["", "Branches > East side", "Branches > West", "Fees"]
    assert "Closed Mondays." in sections[1].text and "East" in sections[1].text and "Lead." in sections[0].text
    assert all("\ue000" not in s.text for s in sections)


def test_docx_heading_styles_and_tables_in_place(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading("Rooms guide", level=0)  # the Title style
    document.add_heading("Large room", level=1)
    document.add_paragraph("Seats forty.")
    document.add_table(rows=1, cols=2).rows[0].cells[0].text = "Projector"
    document.add_heading("Booking", level=2)
    document.add_paragraph("Book a week ahead.")
    document.save(str(tmp_path / "a.docx"))
    sections = read_sections(tmp_path / "a.docx")
    assert [s.heading for s in sections] == ["Rooms guide > Large room", "Rooms guide > Large room > Booking"]
    assert sections[0].text == "Rooms guide\nLarge room\nSeats forty.\nProjector | "
    assert sections[1].text == "Booking\nBook a week ahead."


def test_pdf_pages_are_their_heading(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "a.pdf", [["One."], ["Two."]])
    assert [(s.heading, s.locator) for s in read_sections(path)] == [("page 1", "page 1"), ("page 2", "page 2")]


def test_context_line_and_title() -> None:
    assert document_title("/x/1973-oil_crisis.txt") == "1973 oil crisis"
    assert context_line("service manual", "Setup > Wiring") == "service manual > Setup > Wiring"
    assert context_line("notes", "") == "notes"
    assert with_context("notes", "Body.") == "notes\n\nBody." and with_context("", "Body.") == "Body."


def test_fit_context_keeps_whole_leading_tokens() -> None:
    offsets = [(0, 3), (4, 7), (8, 11)]
    assert fit_context("one two six", offsets, 2) == "one two"
    assert fit_context("one two six", offsets, 3) == "one two six"
    assert fit_context("one two six", offsets, 0) == ""
