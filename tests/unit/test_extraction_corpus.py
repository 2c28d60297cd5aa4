"""Every file of the shared corpus (real and hostile) gets the outcome a user should see.

Each test checks the whole page ledger: refused files raise the right error class; everything
else yields DocumentOpened, pages 1..N with none missing (N = MANIFEST's page/slide count where
it gives one), a reason on every skipped page, the expected status, and text a reader would
recognise.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

import pytest

from deckstream.corpus import CORPUS
from services.domain import DocumentOpened, ExtractionEnded, Page
from services.errors import CorruptFile, EmptyFile, InputRejected, PasswordProtected, UnsupportedFileType
from services.extraction import check_upload, extract
from services.extraction.pdf import find_tessdata
from services.settings import LimitSettings

OCR = find_tessdata("eng") is not None


@dataclass(frozen=True)
class Expect:
    status: str = "ok"  # ok / partial / failed
    text: tuple[str, ...] = ()  # snippets that must appear in the extracted text
    refused: type[InputRejected] | None = None
    reason: str = ""  # must appear in the refusal or in ExtractionEnded.reason


EXPECTED: dict[str, Expect] = {
    "bee4750_hw01_julia-intro.pdf": Expect(text=("Julia",)),
    "bee4750_syllabus.pdf": Expect(text=("Mental Health Resources",)),
    "bee4750_syllabus.docx": Expect(text=("Mental Health Resources",)),
    "exo7_algebre_cours-premiere-annee.pdf": Expect(text=("Ensembles", "application")),
    "freeculture_lessig_352p.pdf": Expect(text=("Free Culture", "piracy")),
    "py4e_Pythonlearn-03-Conditional_slides.pdf": Expect(text=("Comparison Operators",)),
    "whitehead_introduction-to-mathematics_pg41568.pdf": Expect(text=("Newton", "mathematics")),
    "docling_powerpoint_sample.pptx": Expect(text=("Test Table Slide", "Notes:")),
    "docling_pptx_chart.pptx": Expect(text=("Wild Duck Observations",)),
    "py4e_Pythonlearn-02-Expressions.pptx": Expect(text=("Reserved Words", "- A variable is a named place")),
    "py4e_Pythonlearn-06-Strings.pptx": Expect(text=("String",)),
    "py4e_Pythonlearn-10-Tuples.pptx": Expect(text=("Tuples",)),
    "py4e_es_2.1_Spanish.pptx": Expect(text=("Variables",)),
    "docling_equations.docx": Expect(text=("inline equation", "E=mc2")),
    "doj_chapter13-trustee-handbook_872p.docx": Expect(text=("Chapter 13", "trustee")),
    "py4e_python-for-everybody_book.docx": Expect(text=("Python",)),
    "chardet_bom-utf-16-le.srt": Expect(text=("About 2 months ago I found myself on",)),
    "chardet_windows-1252_german_ude_1.txt": Expect(text=("Auslandsschulen", "10€", "gehört")),
    "entre-nous_lectures-francaises_pg44157_utf8-bom.txt": Expect(text=("école",)),
    "how-to-listen-to-music_pg17474_utf16le-bom.txt": Expect(text=("How to Listen to Music",)),
    "macdowell_critical-historical-essays_pg16351_latin1.txt": Expect(text=("MacDowell",)),
    "unstructured_fake-text-utf-16-le-bom.txt": Expect(text=("Hamburgers are delicious",)),
    "docling_ocr_test_scanned-no-text.pdf": (
        Expect(text=("Docling bundles PDF document conversion",))
        if OCR
        else Expect(status="failed", reason="OCR unavailable")
    ),
    "msoffcrypto_example_password.docx": Expect(refused=PasswordProtected, reason="password protected"),
    "msoffcrypto_plain_legacy-word97.doc": Expect(refused=UnsupportedFileType, reason="legacy Word 97-2003"),
    "pdfjs_GHOSTSCRIPT-698804-1-fuzzed.pdf": Expect(status="failed", reason="blank page"),
    "pdfjs_Pages-tree-refs_cyclic.pdf": Expect(
        status="partial", text=("Pages loop",), reason="cycle in page tree"
    ),
    "pdfjs_bomb_giant.pdf": Expect(text=("GIANT JBIG2 BOMB",)),
    "pdfjs_helloworld-bad.pdf": Expect(text=("Hello, world!",)),
    "pdfjs_issue15590_truncated.pdf": Expect(refused=CorruptFile, reason="no readable pages"),
    "pdfjs_issue6010_1_encrypted-pw-abc.pdf": Expect(refused=PasswordProtected, reason="password protected"),
    "pdfjs_issue6069_junk-before-header.pdf": Expect(text=("junk before magic header",)),
    "pdfjs_xref_command_missing.pdf": Expect(text=("Reduced test-case",)),
    "pymupdf_circular-toc.pdf": Expect(text=("Page1", "Page2")),
    "pypdf_r6-user-password_asdfzxcv.pdf": Expect(refused=PasswordProtected, reason="password protected"),
    "pythonpptx_missing_rels_item.pptx": Expect(text=("Presentation Title Text",)),
    "samplefiles_imagemagick-images_no-text.pdf": Expect(status="failed", reason="image-only page"),
    "samplefiles_libreoffice-writer-password.pdf": Expect(
        refused=PasswordProtected, reason="password protected"
    ),
    "tmb-workshop_office-owner-lockfile_lab4_GLMM.pptx": Expect(
        refused=UnsupportedFileType, reason="not a PowerPoint"
    ),
    "truncated_py4e_Pythonlearn-05-Iterations.pdf": Expect(
        status="partial", text=("Loops",), reason="truncated"
    ),
    "unstructured_copy-protected.pdf": Expect(text=("the",)),
    "unstructured_empty.txt": Expect(refused=EmptyFile),
    "unstructured_eng_spa_mult_docx-named-as.doc": Expect(text=("All human beings are born free",)),
    "unstructured_fake-power-point-malformed.pptx": Expect(text=("Problem Date Placeholder", "Test Slide")),
    "zero-bytes.pdf": Expect(refused=EmptyFile),
}


def _manifest() -> dict[str, dict[str, str]]:
    with (CORPUS / "MANIFEST.tsv").open(encoding="utf-8") as f:
        return {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}


def _corpus_files() -> list[str]:
    if not CORPUS.is_dir():
        return []
    return sorted(p.name for p in CORPUS.iterdir() if p.name not in ("MANIFEST.tsv", "README.md"))


FILES = _corpus_files()
skip_without_corpus = pytest.mark.skipif(not FILES, reason=f"shared corpus not found at {CORPUS}")


@skip_without_corpus
def test_every_corpus_file_has_an_expectation() -> None:
    assert set(FILES) == set(EXPECTED), "a corpus file was added or removed: give it an expected outcome"
    assert set(_manifest()) == set(FILES)


@skip_without_corpus
@pytest.mark.parametrize("name", FILES or ["<no corpus>"])
def test_corpus_file(name: str) -> None:
    path, expect, limits = CORPUS / name, EXPECTED[name], LimitSettings()
    if expect.refused is not None:
        with pytest.raises(expect.refused) as refused:
            check_upload(path, limits)
        assert expect.reason in refused.value.reason
        with pytest.raises(expect.refused):
            list(extract(path, limits, filename=name))
        return

    events = list(extract(path, limits, filename=name))
    opened, pages, ended = events[0], events[1:-1], events[-1]
    assert isinstance(opened, DocumentOpened) and isinstance(ended, ExtractionEnded)
    assert all(isinstance(p, Page) for p in pages)
    assert [p.number for p in pages] == list(range(1, len(pages) + 1)), "every page accounted for, in order"
    assert ended.pages_total == len(pages) == opened.pages_total
    expected_pages = _manifest()[name]["pages_or_slides"]
    if expected_pages:
        assert len(pages) == int(expected_pages)
    assert all(p.reason for p in pages if p.method == "skipped"), "a skipped page always says why"
    assert all(p.tokens > 0 for p in pages if p.text.strip())
    assert ended.status == expect.status, ended.reason
    assert expect.reason in (ended.reason or "") + " ".join(p.reason or "" for p in pages)
    text = "\n".join(p.text for p in pages)
    for snippet in expect.text:
        assert snippet.lower() in text.lower(), f"{snippet!r} not extracted"
