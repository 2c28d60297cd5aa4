"""The page beside a card: the passage finder on real corpus pages, the rendering in the sandbox,
and the three routes (page text, page image, a card's source) with a fake feed (no Kafka)."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymupdf
import pytest

from services.cards.passages import PageWord, find_passage, text_words
from services.documents.decks import store_chunk_cards
from services.domain import Card, Page
from services.extraction import Sandbox, extract, isolated
from services.extraction.render import MAX_PIXELS, RenderJob, render_page, scale_for
from services.settings import LimitSettings
from services.storage.blobs import LocalBlobStore
from tests.conftest import corpus_file
from tests.unit.test_tenant_isolation import World, auth, make_world

HOMEWORK = "bee4750_hw01_julia-intro.pdf"  # page 2: Julia set-up, then problem 1.1
SYLLABUS = "bee4750_syllabus.docx"
SEED = "You should always set a seed when working with random numbers."


def pdf_words(path: Path, number: int, tmp_path: Path) -> list[PageWord]:
    rendered = render_page(path, LimitSettings(), RenderJob(number, 1200, tmp_path / f"p{number}.png"))
    return [PageWord(text, line, (x0, y0, x1, y1)) for x0, y0, x1, y1, text, line in rendered.words]


def docx_page(number: int) -> Page:
    path = corpus_file(SYLLABUS)
    pages = [p for p in extract(path, LimitSettings(), filename=SYLLABUS) if isinstance(p, Page)]
    return pages[number - 1]


# The finder ------------------------------------------------------------------------------------


def test_the_answers_sentence_is_found_and_boxed_where_it_is_printed(tmp_path: Path) -> None:
    words = pdf_words(corpus_file(HOMEWORK), 2, tmp_path)
    found = find_passage(
        words, "basic", "What should you always do when working with random numbers?", "set a seed"
    )
    assert found is not None and found.text == SEED
    # The sentence runs over two printed lines: one rectangle each, around its own words.
    assert len(found.rects) == 2
    first_word = next(w for w in words if w.text == "You" and w.box is not None)
    x0, y0, x1, y1 = found.rects[0]
    assert first_word.box is not None and (x0, y0) == first_word.box[:2]
    assert all(0 <= v <= 1 for rect in found.rects for v in rect) and x1 > x0 and y1 > y0
    assert found.rects[1][1] > y1 - 0.001  # the second line is below the first


def test_a_reworded_question_still_finds_the_sentence_it_asks_about(tmp_path: Path) -> None:
    words = pdf_words(corpus_file(HOMEWORK), 2, tmp_path)
    found = find_passage(
        words,
        "basic",
        "Why does the code fix a random seed?",
        "It ensures reproducibility of random numbers.",
    )
    assert found is not None
    assert (
        found.text == "# this sets a random seed, which ensures reproducibility of random number generation."
    )
    assert {"reproducibility", "seed"} <= set(found.terms)


def test_a_cloze_card_finds_the_sentence_it_was_cut_from(tmp_path: Path) -> None:
    words = pdf_words(corpus_file(HOMEWORK), 2, tmp_path)
    front = "Standard Julia practice is to load all needed {{c1::packages}} at the top of a file."
    found = find_passage(words, "cloze", front, "packages")
    assert found is not None
    assert found.text == "Standard Julia practice is to load all needed packages at the top of a file."
    assert len(found.rects) == 1 and found.rects[0][1] < 0.15  # the page's first line


def test_a_card_the_page_does_not_support_gets_no_highlight(tmp_path: Path) -> None:
    words = pdf_words(corpus_file(HOMEWORK), 2, tmp_path)
    assert find_passage(words, "basic", "What is the capital of France?", "Paris") is None
    # One of two answer terms is not enough, even beside the question's terms.
    assert find_passage(words, "basic", "What should you always set?", "a seed crystal lattice") is None
    assert find_passage([], "basic", "What is a seed?", "a random start") is None


def test_extracted_text_gives_the_passage_without_boxes() -> None:
    page = docx_page(2)
    found = find_passage(
        text_words(page.text), "basic", "Where does the course meet?", "in 105 Riley-Robb Hall, MWF 1:25–2:15"
    )
    assert found is not None and found.rects == []
    assert found.text == "This course meets MWF from 1:25–2:15 in 105 Riley-Robb Hall."


def test_a_word_hyphenated_across_a_line_break_is_read_whole() -> None:
    words = [
        PageWord("Plants", 0, (0.1, 0.1, 0.2, 0.12)),
        PageWord("use", 0, (0.21, 0.1, 0.3, 0.12)),
        PageWord("photo-", 0, (0.31, 0.1, 0.4, 0.12)),
        PageWord("synthesis.", 1, (0.1, 0.13, 0.25, 0.15)),
        PageWord("Cats", 1, (0.26, 0.13, 0.3, 0.15)),
        PageWord("sleep.", 1, (0.31, 0.13, 0.4, 0.15)),
    ]
    found = find_passage(words, "basic", "What do plants use?", "Photosynthesis")
    assert found is not None and found.text == "Plants use photo- synthesis."
    assert found.rects == [(0.1, 0.1, 0.4, 0.12), (0.1, 0.13, 0.25, 0.15)]


def test_boxes_follow_a_rotated_page(tmp_path: Path) -> None:
    source = pymupdf.open(corpus_file(HOMEWORK))
    turned = pymupdf.open()
    turned.insert_pdf(source, from_page=1, to_page=1)
    turned[0].set_rotation(90)
    path = tmp_path / "turned.pdf"
    turned.save(path)
    front = "Standard Julia practice is to load all needed {{c1::packages}} at the top of a file."
    found = find_passage(pdf_words(path, 1, tmp_path), "cloze", front, "packages")
    assert found is not None
    ((x0, y0, x1, y1),) = found.rects
    # Turned a quarter clockwise, the first line stands upright at the page's right edge.
    assert x0 > 0.85 and y1 - y0 > x1 - x0


def test_a_page_is_drawn_1200_px_wide_unless_that_passes_the_pixel_budget() -> None:
    assert scale_for(612, 792, 1200) == pytest.approx(1200 / 612)
    tall = scale_for(612, 792 * 100, 1200)  # a page a hundred times taller than wide
    assert 612 * tall * 792 * 100 * tall <= MAX_PIXELS * 1.0001


# The routes ------------------------------------------------------------------------------------


@dataclass
class Calls:
    render: list[int] = field(default_factory=list)  # page numbers the sandbox was asked for
    extract: int = 0


@pytest.fixture()
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Every sandbox job the API starts, counted."""
    seen = Calls()
    render, extract_ = Sandbox.render, Sandbox.extract

    def counted_render(self: Sandbox, path: Path, job: RenderJob, **kw: Any) -> Any:
        seen.render.append(job.number)
        return render(self, path, job, **kw)

    def counted_extract(self: Sandbox, path: Path, **kw: Any) -> Any:
        seen.extract += 1
        return extract_(self, path, **kw)

    monkeypatch.setattr(Sandbox, "render", counted_render)
    monkeypatch.setattr(Sandbox, "extract", counted_extract)
    return seen


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[World]:
    with make_world(tmp_path) as made:
        yield made


def upload(world: World, path: Path, name: str | None = None) -> str:
    """Tenant A uploads a file; the feed learns of the upload as it would from the log."""
    with path.open("rb") as f:
        r = world.client.post(
            "/v1/documents", headers=auth(world.keys.a), files={"file": (name or path.name, f)}
        )
    assert r.status_code == 202, r.text
    world.hub.feed(world.publisher.sent[-1][1])
    return str(r.json()["document_id"])


def keep_instead(world: World, path: Path) -> None:
    """Put other bytes in place of the last upload's kept file: a file the upload check or its
    size limit would refuse, as if it had been let in."""
    kept = world.app.state.deckstream.blobs.path(world.publisher.sent[-1][1].blob_uri)
    kept.write_bytes(path.read_bytes())


def add_card(world: World, doc: str, **fields: Any) -> Card:
    settings = world.app.state.deckstream.settings
    card = Card(
        card_id=fields.pop("card_id", "c" * 32),
        file="f",
        page_label=str(fields["page"]),
        section=(),
        chunk_index=0,
        prompt_version="v2",
        **fields,
    )
    store_chunk_cards(LocalBlobStore(settings.blob_dir), doc, 1, 0, [card])
    return card


def get(world: World, path: str, key: str | None = None, **headers: str) -> Any:
    return world.client.get(path, headers={**auth(key or world.keys.a), **headers})


def is_problem(r: Any, status: int, code: str) -> bool:
    return bool(
        r.status_code == status
        and r.headers["content-type"] == "application/problem+json"
        and r.json()["type"].endswith("/" + code)
    )


def test_a_pdf_page_its_image_and_a_cards_passage(world: World, calls: Calls) -> None:
    doc = upload(world, corpus_file(HOMEWORK))
    page = get(world, f"/v1/documents/{doc}/pages/2")
    assert page.status_code == 200, page.text
    body = page.json()
    assert (body["number"], body["pages_total"], body["label"], body["method"]) == (2, 9, "2", "text")
    assert SEED.replace("random numbers", "random\nnumbers") in body["text"]
    assert body["image_url"].endswith(f"/v1/documents/{doc}/pages/2/image")

    image = get(world, f"/v1/documents/{doc}/pages/2/image")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.headers["cache-control"].startswith("private, max-age=")
    png = pymupdf.Pixmap(image.content)
    assert (png.width, png.height) == (1200, 1553)
    assert calls.render == [2]

    etag = image.headers["etag"]
    assert get(world, f"/v1/documents/{doc}/pages/2/image", **{"If-None-Match": etag}).status_code == 304
    again = get(world, f"/v1/documents/{doc}/pages/2/image")
    assert again.content == image.content and again.headers["etag"] == etag
    assert calls.render == [2], "a cached page was rendered again"

    add_card(
        world, doc, type="basic", front="What should you do with random numbers?", back="set a seed", page=2
    )
    source = get(world, f"/v1/decks/{doc}/cards/{'c' * 32}/source")
    assert source.status_code == 200, source.text
    got = source.json()
    assert (got["page"], got["page_label"], got["passage"]) == (2, "2", SEED)
    assert got["image_url"] == body["image_url"] and len(got["rects"]) == 2
    assert all(r["x"] >= 0 and r["x"] + r["width"] <= 1 and 0 <= r["y"] <= 1 for r in got["rects"])
    assert calls.render == [2] and calls.extract == 1  # words from the render, text read once


def test_a_docx_page_has_its_text_but_no_image(world: World, calls: Calls) -> None:
    doc = upload(world, corpus_file(SYLLABUS))
    page = get(world, f"/v1/documents/{doc}/pages/2").json()
    assert page["image_url"] is None and page["label"] == "≈2"
    assert "This course meets MWF from 1:25–2:15 in 105 Riley-Robb Hall." in page["text"]

    image = get(world, f"/v1/documents/{doc}/pages/2/image")
    assert is_problem(image, 404, "no-page-image"), image.text
    assert "Word document" in image.json()["detail"]
    assert calls.render == []

    add_card(
        world, doc, type="basic", front="Where does the course meet?", back="105 Riley-Robb Hall", page=2
    )
    got = get(world, f"/v1/decks/{doc}/cards/{'c' * 32}/source").json()
    assert got["passage"] == "This course meets MWF from 1:25–2:15 in 105 Riley-Robb Hall."
    assert (got["rects"], got["image_url"]) == ([], None)
    assert calls.extract == 1


def test_a_page_or_card_that_is_not_there_is_a_404_problem(world: World, calls: Calls) -> None:
    doc = upload(world, corpus_file(HOMEWORK))
    for number in (0, 10, 10**9):
        assert is_problem(get(world, f"/v1/documents/{doc}/pages/{number}"), 404, "no-such-page")
        assert is_problem(get(world, f"/v1/documents/{doc}/pages/{number}/image"), 404, "no-such-page")
    assert is_problem(get(world, f"/v1/decks/{doc}/cards/{'9' * 32}/source"), 404, "no-such-card")
    assert not list(Path(world.app.state.deckstream.settings.blob_dir, "pages", doc, "images").glob("*"))


def test_another_tenants_pages_answer_like_a_missing_document(world: World, calls: Calls) -> None:
    doc = upload(world, corpus_file(HOMEWORK))
    add_card(
        world, doc, type="basic", front="What should you do with random numbers?", back="set a seed", page=2
    )
    for path in ("pages/1", "pages/1/image"):
        theirs = get(world, f"/v1/documents/{doc}/{path}", world.keys.b)
        missing = get(world, f"/v1/documents/{'0' * 32}/{path}", world.keys.b)
        assert is_problem(theirs, 404, "not-found")
        assert theirs.json()["detail"].replace(doc, "?") == missing.json()["detail"].replace("0" * 32, "?")
    theirs = get(world, f"/v1/decks/{doc}/cards/{'c' * 32}/source", world.keys.b)
    assert is_problem(theirs, 404, "not-found") and "passage" not in theirs.text
    assert calls.render == [] and calls.extract == 0  # nothing of theirs was even read


def test_a_document_whose_upload_the_feed_has_not_read_yet_is_a_409(world: World) -> None:
    with corpus_file(HOMEWORK).open("rb") as f:
        r = world.client.post("/v1/documents", headers=auth(world.keys.a), files={"file": (HOMEWORK, f)})
    doc = r.json()["document_id"]
    assert is_problem(get(world, f"/v1/documents/{doc}/pages/1"), 409, "not-in-log")


# Pages that cannot be rendered -----------------------------------------------------------------


def huge_image_pdf(path: Path, side: int = 14_000) -> Path:
    """One page with a side×side grey image (196 MB decoded, 190 KB in the file): MuPDF takes
    about a second to draw it at 1200 px."""
    raw = zlib.compress(b"\xff" * (side * side), 9)
    content = b"q 612 0 0 792 0 0 cm /Im0 Do Q BT /F1 12 Tf 72 720 Td (A huge image.) Tj ET"
    objects = [
        b"<</Type/Catalog/Pages 2 0 R>>",
        b"<</Type/Pages/Kids[3 0 R]/Count 1>>",
        b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]"
        b"/Resources<</XObject<</Im0 4 0 R>>/Font<</F1 6 0 R>>>>/Contents 5 0 R>>",
        b"<</Type/XObject/Subtype/Image/Width %d/Height %d/ColorSpace/DeviceGray/BitsPerComponent 8"
        b"/Filter/FlateDecode/Length %d>>\nstream\n" % (side, side, len(raw)) + raw + b"\nendstream",
        b"<</Length %d>>\nstream\n" % len(content) + content + b"\nendstream",
        b"<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<</Size %d/Root 1 0 R>>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def test_a_page_over_the_time_limit_is_a_422_and_is_tried_again_later(
    world: World, calls: Calls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = upload(world, huge_image_pdf(tmp_path / "huge.pdf"))
    monkeypatch.setattr(isolated, "RENDER_TIMEOUT_S", 0.05)  # the page takes ~1 s here
    slow = get(world, f"/v1/documents/{doc}/pages/1/image")
    assert is_problem(slow, 422, "page-not-rendered"), slow.text
    assert "timed out" in slow.json()["detail"]
    monkeypatch.setattr(isolated, "RENDER_TIMEOUT_S", 30.0)  # a calmer moment: it renders
    assert pymupdf.Pixmap(get(world, f"/v1/documents/{doc}/pages/1/image").content).width == 1200
    assert calls.render == [1, 1]


def test_a_page_that_cannot_be_read_is_a_422_once_and_never_rendered_again(
    world: World, calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = upload(world, corpus_file(HOMEWORK))
    keep_instead(world, corpus_file("pdfjs_issue15590_truncated.pdf"))  # the upload check refuses it
    for _ in range(2):
        r = get(world, f"/v1/documents/{doc}/pages/1/image")
        assert is_problem(r, 422, "page-not-rendered") and "damaged" in r.json()["detail"], r.text
    assert calls.render == [1]


def test_render_refuses_any_file_but_a_pdf(tmp_path: Path) -> None:
    sandbox = Sandbox(LimitSettings())
    try:
        with pytest.raises(Exception, match="only the pages of a PDF") as refused:
            sandbox.render(corpus_file(SYLLABUS), RenderJob(1, 1200, tmp_path / "x.png"), filename=SYLLABUS)
        assert refused.typename == "UnsupportedFileType"
        assert not (tmp_path / "x.png").exists()
    finally:
        sandbox.close()
