"""Structure a reader relies on: sections, slide titles, tables, lists, labels, clean text."""

from __future__ import annotations

import json
from pathlib import Path

import docx
import pptx
import pymupdf
import pytest
import typer
from docx.enum.text import WD_BREAK
from pptx.util import Inches
from typer.testing import CliRunner

from deckstream.corpus import CORPUS
from deckstream.extract_cli import register
from services.domain import Page
from services.extraction import extract
from services.settings import LimitSettings

LIMITS = LimitSettings()


def pages_of(path: Path) -> list[Page]:
    return [e for e in extract(path, LIMITS, filename=path.name) if isinstance(e, Page)]


def _pdf(
    path: Path, pages: list[list[tuple[float, str, float]]], toc: list[list[object]] | None = None
) -> Path:
    """pages: per page, (y, text, fontsize) lines."""
    doc = pymupdf.open()
    for lines in pages:
        page = doc.new_page()
        for y, text, size in lines:
            page.insert_text((72, y), text, fontsize=size)
    if toc:
        doc.set_toc(toc)
    doc.save(path)
    return path


BODY = "Cells use energy stored in glucose to make ATP in the mitochondria of the cell."


def test_pdf_sections_follow_the_outline(tmp_path: Path) -> None:
    toc: list[list[object]] = [[1, "Chapter 1 Cells", 1], [2, "1.1 Membranes", 2], [1, "Chapter 2 Energy", 3]]
    path = _pdf(tmp_path / "book.pdf", [[(100, f"{BODY} {n}", 11)] for n in range(4)], toc)
    assert [p.section for p in pages_of(path)] == [
        ("Chapter 1 Cells",),
        ("Chapter 1 Cells", "1.1 Membranes"),
        ("Chapter 2 Energy",),
        ("Chapter 2 Energy",),
    ]


def test_pdf_without_outline_takes_headings_from_big_fonts(tmp_path: Path) -> None:
    pages = [
        [(80, "Photosynthesis", 24), (130, BODY, 11), (150, BODY, 11)],
        [(80, "Light reactions", 18), (130, BODY, 11), (150, BODY, 11)],
        [(100, BODY, 11), (120, BODY, 11)],
        [(80, "Respiration", 24), (130, BODY, 11)],
    ]
    sections = [p.section for p in pages_of(_pdf(tmp_path / "notes.pdf", pages))]
    assert sections == [
        ("Photosynthesis",),
        ("Photosynthesis", "Light reactions"),
        ("Photosynthesis", "Light reactions"),
        ("Respiration",),
    ]


@pytest.mark.skipif(
    not (CORPUS / "whitehead_introduction-to-mathematics_pg41568.pdf").exists(), reason="no corpus"
)
def test_textbook_pages_cite_chapter_and_printed_page_label() -> None:
    pages = pages_of(CORPUS / "whitehead_introduction-to-mathematics_pg41568.pdf")
    assert [p.label for p in pages[:6]] == ["A", "B", "i", "ii", "1", "2"]
    newton = next(p for p in pages if "that of Newton and\nthe Law of Gravity" in p.text)
    assert newton.section == ("Main Matter.", "III: Methods of Application.")
    assert newton.label == "17"
    assert "INTRODUCTION TO MATHEMATICS" not in newton.text  # the running header is gone


def test_pdf_page_labels_fall_back_to_the_number(tmp_path: Path) -> None:
    path = _pdf(tmp_path / "labels.pdf", [[(100, f"{BODY} {n}", 11)] for n in range(4)])
    assert [p.label for p in pages_of(path)] == ["1", "2", "3", "4"]
    doc = pymupdf.open(path)
    doc.set_page_labels(
        [
            {"startpage": 0, "prefix": "", "style": "r", "firstpagenum": 1},
            {"startpage": 2, "prefix": "A-", "style": "D", "firstpagenum": 1},
        ]
    )
    doc.save(tmp_path / "labelled.pdf")
    assert [p.label for p in pages_of(tmp_path / "labelled.pdf")] == ["i", "ii", "A-1", "A-2"]


def test_running_headers_and_page_numbers_are_removed(tmp_path: Path) -> None:
    pages = [
        [
            (40, "Biology 101 - Unit 3: Metabolism", 9),
            (120, f"Body text number {n}: {BODY}", 11),
            (800, str(n + 1), 9),
        ]
        for n in range(10)
    ]
    pages[4].insert(0, (40 + 12, "Lab safety reminder", 9))  # a one-off line near the top stays
    extracted = pages_of(_pdf(tmp_path / "course.pdf", pages))
    assert all("Biology 101" not in p.text for p in extracted)
    assert all(p.text.splitlines()[-1].endswith("cell.") for p in extracted)  # no page number at the end
    assert all(f"Body text number {n}" in p.text for n, p in enumerate(extracted))
    assert "Lab safety reminder" in extracted[4].text


def test_words_hyphenated_at_line_ends_are_joined(tmp_path: Path) -> None:
    lines = [
        (100, "Plants capture light through photo-", 11),
        (114, "synthesis in their leaves. Well-", 11),
        (128, "Known results follow.", 11),
    ]
    [page] = pages_of(_pdf(tmp_path / "hyphen.pdf", [lines]))
    assert "photosynthesis" in page.text and "photo-" not in page.text
    assert "Well-\nKnown" in page.text  # capitalised continuation: a real hyphen, kept


def _deck(path: Path) -> Path:
    deck = pptx.Presentation()
    title_only, bullets = deck.slide_layouts[5], deck.slide_layouts[1]
    first = deck.slides.add_slide(bullets)
    first.shapes.title.text = "Cell organelles"
    body = first.placeholders[1].text_frame
    body.text = "Nucleus holds DNA"
    sub = body.add_paragraph()
    sub.text, sub.level = "Nucleolus makes ribosomes", 1
    first.notes_slide.notes_text_frame.text = "Ask students to draw a cell."
    second = deck.slides.add_slide(title_only)
    second.shapes.title.text = "Enzymes"
    table = second.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(6), Inches(1)).table
    for r, row in enumerate([("Enzyme", "Substrate"), ("Amylase", "Starch")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    group = second.shapes.add_group_shape()
    box = group.shapes.add_textbox(Inches(1), Inches(4), Inches(3), Inches(1))
    box.text_frame.text = "Grouped caption: lock and key"
    deck.slides.add_slide(deck.slide_layouts[6])  # blank slide
    deck.save(str(path))
    return path


def test_slides_are_pages_titled_by_their_slide_title(tmp_path: Path) -> None:
    first, second, blank = pages_of(_deck(tmp_path / "lecture.pptx"))
    assert (first.label, first.section) == ("Slide 1", ("Cell organelles",))
    assert first.text.splitlines()[:3] == [
        "Cell organelles",
        "- Nucleus holds DNA",
        "  - Nucleolus makes ribosomes",
    ]
    assert first.text.endswith("Notes:\nAsk students to draw a cell.")
    assert second.section == ("Enzymes",)
    assert "Enzyme | Substrate\nAmylase | Starch" in second.text
    assert "Grouped caption: lock and key" in second.text
    assert (blank.method, blank.label, blank.reason) == ("skipped", "Slide 3", "empty slide (no text)")


def test_docx_headings_lists_and_tables(tmp_path: Path) -> None:
    document = docx.Document()
    document.add_heading("Biochemistry", level=0)
    document.add_heading("Enzymes", level=1)
    document.add_paragraph("Enzymes lower activation energy.")
    document.add_paragraph("Amylase", style="List Bullet")
    document.add_paragraph("Lipase", style="List Bullet")
    table = document.add_table(rows=2, cols=2)
    for r, row in enumerate([("Enzyme", "Substrate"), ("Amylase", "Starch")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.add_heading("Kinetics", level=2)
    document.add_paragraph("Michaelis-Menten describes rates.")
    document.save(str(tmp_path / "bio.docx"))
    [page] = pages_of(tmp_path / "bio.docx")
    assert page.label == "≈1"
    assert page.section == ("Biochemistry", "Enzymes")
    assert "- Amylase\n\n- Lipase" in page.text
    assert "Enzyme | Substrate\nAmylase | Starch" in page.text


def test_docx_estimated_pages_cut_at_500_words_and_page_breaks(tmp_path: Path) -> None:
    document = docx.Document()
    document.add_heading("Genetics", level=1)
    for n in range(14):  # 14 paragraphs of 100 words: pages of 500, 500 and 400 words
        document.add_paragraph(" ".join([f"gene{n}"] * 100))
    document.add_heading("Evolution", level=1)
    document.add_paragraph("Natural selection acts on variation.").runs[0].add_break(WD_BREAK.PAGE)
    document.add_paragraph("After the break.")
    document.save(str(tmp_path / "long.docx"))
    pages = pages_of(tmp_path / "long.docx")
    assert [p.label for p in pages] == ["≈1", "≈2", "≈3", "≈4", "≈5"]
    assert all(len(p.text.split()) <= 600 for p in pages)
    assert pages[2].section == ("Genetics",)
    assert pages[3].section == ("Evolution",) and pages[3].text.startswith("Evolution")  # cut at the heading
    assert pages[4].text == "After the break."
    assert pages == pages_of(tmp_path / "long.docx")  # stable: same file, same pages


def test_markdown_headings_and_subtitles(tmp_path: Path) -> None:
    filler = " ".join(["cytoplasm"] * 450)
    notes = f"# Cells\n\nIntro.\n\n{filler}\n\n## Membranes\n\n```\n# not a heading\n```\n\nLipids.\n"
    (tmp_path / "notes.md").write_text(notes)
    first, second = pages_of(tmp_path / "notes.md")
    assert (first.section, second.section) == (("Cells",), ("Cells", "Membranes"))
    assert second.text.startswith("Membranes") and "# not a heading" in second.text
    (tmp_path / "talk.srt").write_text(
        "1\n00:00:01,000 --> 00:00:03,000\nHello class.\n\n2\n00:00:04,000 --> "
        "00:00:06,500\nToday: osmosis.\n"
    )
    [talk] = pages_of(tmp_path / "talk.srt")
    assert talk.text == "Hello class.\n\nToday: osmosis."


def test_pdf_tables_become_rows_only_when_asked(tmp_path: Path) -> None:
    doc = pymupdf.open()
    page = doc.new_page()
    rows = [
        ("Enzyme", "Substrate", "Product"),
        ("Amylase", "Starch", "Maltose"),
        ("Lipase", "Fat", "Glycerol"),
    ]
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            cell = pymupdf.Rect(72 + c * 150, 100 + r * 24, 222 + c * 150, 124 + r * 24)
            page.draw_rect(cell, color=(0, 0, 0), width=0.8)
            page.insert_text((cell.x0 + 4, cell.y1 - 8), value, fontsize=10)
    page.insert_text((72, 200), "Amylase works in the mouth.", fontsize=11)
    doc.save(tmp_path / "table.pdf")
    plain = next(
        e for e in extract(tmp_path / "table.pdf", LIMITS, filename="table.pdf") if isinstance(e, Page)
    )
    assert " | " not in plain.text  # find_tables is opt-in: it costs 10-100x per page
    events = extract(tmp_path / "table.pdf", LIMITS, filename="table.pdf", tables=True)
    page_with_tables = next(e for e in events if isinstance(e, Page))
    assert (
        "Enzyme | Substrate | Product\nAmylase | Starch | Maltose\nLipase | Fat | Glycerol"
        in page_with_tables.text
    )
    assert page_with_tables.text.endswith("Amylase works in the mouth.")


def test_cli_prints_the_page_ledger_and_the_text(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps `extract` a subcommand
    deck = _deck(tmp_path / "lecture.pptx")
    result = CliRunner().invoke(app, ["extract", "--in-process", str(deck)])
    assert result.exit_code == 0, result.output
    ledger = json.loads(result.stdout)
    assert (ledger["kind"], ledger["status"], ledger["pages_total"]) == ("pptx", "ok", 3)
    assert ledger["pages"][0] == {
        "number": 1,
        "label": "Slide 1",
        "section": ["Cell organelles"],
        "chars": ledger["pages"][0]["chars"],
        "tokens": ledger["pages"][0]["tokens"],
        "method": "text",
        "reason": None,
    }
    assert ledger["pages"][0]["chars"] > 50 and ledger["pages"][0]["tokens"] > 10
    text = CliRunner().invoke(app, ["extract", "--text", str(deck)])
    assert text.exit_code == 0
    assert "=== page 2 (Slide 2) ===\nEnzymes\n" in text.stdout
