"""PowerPoint (.pptx) decks: one Page per slide, labelled "Slide N", section = (slide title,).

Slide text: the title line, then every other shape top-to-bottom, left-to-right (groups are
read recursively in the same order): text frames paragraph by paragraph (bulleted paragraphs
start with "- ", indented by level), tables one row per line (``cell | cell``), charts by title,
series and categories. Speaker notes follow a "Notes:" line. A shape python-pptx cannot read is
skipped on its own; a slide that cannot be read at all is a skipped page with the reason.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pptx
from pptx.enum.shapes import MSO_SHAPE_TYPE, PP_PLACEHOLDER
from pptx.oxml.ns import qn

from services.domain import DocumentOpened, Page
from services.errors import CorruptFile, EmptyFile

from .cleanup import normalize_text

_BULLETED = {
    PP_PLACEHOLDER.BODY,
    PP_PLACEHOLDER.OBJECT,
    PP_PLACEHOLDER.VERTICAL_BODY,
    PP_PLACEHOLDER.VERTICAL_OBJECT,
}
_TITLES = {PP_PLACEHOLDER.TITLE, PP_PLACEHOLDER.CENTER_TITLE, PP_PLACEHOLDER.VERTICAL_TITLE}


def _position(shape: Any) -> tuple[int, int]:
    try:
        return int(shape.top or 0), int(shape.left or 0)
    except Exception:
        return 0, 0


def _placeholder_type(shape: Any) -> Any:
    try:
        return shape.placeholder_format.type if shape.is_placeholder else None
    except Exception:
        return None


def _bulleted(paragraph: Any, default: bool) -> bool:
    ppr = paragraph._p.pPr
    if ppr is not None:
        if ppr.find(qn("a:buNone")) is not None:
            return False
        if ppr.find(qn("a:buChar")) is not None or ppr.find(qn("a:buAutoNum")) is not None:
            return True
    return default


def _text_frame_lines(shape: Any) -> list[str]:
    default = _placeholder_type(shape) in _BULLETED
    lines = []
    for paragraph in shape.text_frame.paragraphs:
        text = paragraph.text.replace("\v", "\n").strip()
        if not text:
            continue
        if _bulleted(paragraph, default):
            text = "  " * min(paragraph.level, 8) + "- " + text
        lines.append(text)
    return lines


def _chart_lines(chart: Any) -> list[str]:
    lines = []
    if chart.has_title and chart.chart_title.has_text_frame:
        lines.append("Chart: " + " ".join(chart.chart_title.text_frame.text.split()))
    series = [str(s.name) for plot in chart.plots for s in plot.series if s.name]
    if series:
        lines.append("Series: " + ", ".join(series))
    categories = [str(c) for c in chart.plots[0].categories] if len(chart.plots) else []
    if categories:
        lines.append("Categories: " + ", ".join(categories))
    return lines


def _shape_lines(shape: Any, depth: int = 0) -> list[str]:
    try:
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP and depth < 20:
            children = sorted(shape.shapes, key=_position)
            return [line for child in children for line in _shape_lines(child, depth + 1)]
        if getattr(shape, "has_table", False) and shape.has_table:
            rows = (" | ".join(" ".join(cell.text.split()) for cell in row.cells) for row in shape.table.rows)
            return [row for row in rows if row.strip(" |")]
        if getattr(shape, "has_chart", False) and shape.has_chart:
            return _chart_lines(shape.chart)
        if shape.has_text_frame:
            return _text_frame_lines(shape)
    except Exception:  # one odd shape must not cost the slide
        return []
    return []


def _slide_text(slide: Any) -> tuple[str, str]:
    """(title, page text) of one slide."""
    title_shape = next(
        (s for s in slide.shapes if _placeholder_type(s) in _TITLES and s.has_text_frame), None
    )
    title = " ".join(title_shape.text_frame.text.split()) if title_shape is not None else ""
    body = [
        line
        for s in sorted(slide.shapes, key=_position)
        if title_shape is None or s.element is not title_shape.element  # shapes are fresh proxies per access
        for line in _shape_lines(s)
    ]
    parts = ([title] if title else []) + body
    if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
        notes = slide.notes_slide.notes_text_frame.text.strip()
        if notes:
            parts += ["", "Notes:", notes]
    return title, normalize_text("\n".join(parts))


def read_pptx(path: Path) -> Generator[DocumentOpened | Page, None, None]:
    """DocumentOpened, then one Page per slide (see the module docstring)."""
    try:
        presentation = pptx.Presentation(str(path))
        slides = list(presentation.slides)
        title = (presentation.core_properties.title or "").strip() or None
    except MemoryError:
        raise
    except Exception as e:
        raise CorruptFile(f"the PowerPoint file is damaged ({str(e)[:160] or type(e).__name__})") from e
    if not slides:
        raise EmptyFile("the presentation has no slides")
    yield DocumentOpened("pptx", len(slides), title)
    for number, slide in enumerate(slides, start=1):
        label = f"Slide {number}"
        try:
            heading, text = _slide_text(slide)
        except Exception as e:
            yield Page(
                number, label, (), "", "skipped", f"unreadable slide: {str(e)[:160] or type(e).__name__}"
            )
            continue
        section = (heading[:200],) if heading else ()
        if text:
            yield Page(number, label, section, text, "text")
        else:
            yield Page(number, label, section, "", "skipped", "empty slide (no text)")
