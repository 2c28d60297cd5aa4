"""One PDF page as a PNG and its words with their boxes, for the page beside a card.

It parses a user's file, so it runs in the extraction sandbox (``Sandbox.render``: the child's
memory and CPU limits, the parent's deadline), never in the API process. The PDF is opened with
``open_pdf``, the same checks extraction makes. The image is ``width`` pixels wide, or narrower
when that would pass ``MAX_PIXELS`` (a page a hundred times taller than wide): what a page can
cost is bounded by the pixels, not by the page's size. The PNG is written next to its final
name and moved there whole, so a reader never sees half an image.

Words come in reading units PyMuPDF gives (``get_text("words")``), with boxes normalised to 0..1
of the rendered page (rotation applied), and stop at ``max_page_chars`` characters.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.settings import LimitSettings

MAX_PIXELS = 6_000_000  # 1200 px wide: a page up to five times taller than wide renders whole
Word = tuple[float, float, float, float, str, int]  # x0, y0, x1, y1 (0..1), text, line (block·line)


class NoSuchPage(ValueError):
    """The page asked for is past the document's end."""

    def __init__(self, pages_total: int) -> None:
        super().__init__(f"the document has {pages_total} pages")
        self.pages_total = pages_total


@dataclass(frozen=True, slots=True)
class RenderJob:
    number: int  # 1-based
    width: int  # pixels
    png: Path  # where the image goes


@dataclass(frozen=True, slots=True)
class RenderedPage:
    number: int
    width: int  # the image's pixels
    height: int
    words: list[Word]

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "width": self.width, "height": self.height, "words": self.words}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RenderedPage:
        words = [
            (float(a), float(b), float(c), float(d), str(t), int(k)) for a, b, c, d, t, k in data["words"]
        ]
        return cls(int(data["number"]), int(data["width"]), int(data["height"]), words)


def scale_for(page_width: float, page_height: float, width: int, max_pixels: int = MAX_PIXELS) -> float:
    """Points to pixels: ``width`` pixels across, unless the image would pass ``max_pixels``."""
    area = max(page_width * page_height, 1e-6)
    return min(width / max(page_width, 1e-6), math.sqrt(max_pixels / area))


def page_words(page: Any, limit_chars: int) -> list[Word]:
    from .pdf import FLAGS, fitz

    rect, turn = page.rect, page.rotation_matrix  # words come unrotated; the image is rotated
    w, h = max(rect.width, 1e-6), max(rect.height, 1e-6)
    out: list[Word] = []
    chars = 0
    for x0, y0, x1, y1, text, block, line, _ in page.get_text("words", flags=FLAGS):
        box = fitz.Rect(x0, y0, x1, y1) * turn
        out.append(
            (
                round(box.x0 / w, 5),
                round(box.y0 / h, 5),
                round(box.x1 / w, 5),
                round(box.y1 / h, 5),
                text,
                block * 10_000 + line,
            )
        )
        chars += len(text) + 1
        if chars > limit_chars:
            break
    return out


def render_page(path: Path, limits: LimitSettings, job: RenderJob) -> RenderedPage:
    """Render page ``job.number`` of the PDF at ``path`` to ``job.png``; its size and words."""
    from .pdf import fitz, open_pdf

    doc = open_pdf(path, limits)
    try:
        if not 1 <= job.number <= doc.page_count:
            raise NoSuchPage(doc.page_count)
        page = doc.load_page(job.number - 1)
        scale = scale_for(page.rect.width, page.rect.height, job.width)
        pixmap = page.get_pixmap(matrix=fitz.Matrix(scale, scale), alpha=False)
        job.png.parent.mkdir(parents=True, exist_ok=True)
        tmp = job.png.with_name(f".{job.png.name}.{os.getpid()}.tmp")
        pixmap.save(str(tmp), output="png")
        os.replace(tmp, job.png)
        return RenderedPage(job.number, pixmap.width, pixmap.height, page_words(page, limits.max_page_chars))
    finally:
        doc.close()
