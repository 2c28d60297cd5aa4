"""Word (.docx) documents as estimated pages with a section path.

DOCX stores no page numbers: Word lays pages out when it opens the file. We cite the section
(from ``Title`` and ``Heading N`` styles, custom styles based on them, or a paragraph outline
level) plus a stable estimated page, cut by ``text.paginate``: a new page every ~500 words at a
paragraph boundary, at explicit page breaks (``w:br w:type="page"``, ``pageBreakBefore``) and at
the page breaks Word recorded when it last saved (``w:lastRenderedPageBreak``), ignoring a break
that would leave an empty page. The same file always gives the same pages; labels read "≈3".

Body order is kept: paragraphs, tables (one row per line, ``cell | cell``), content controls.
List paragraphs start with "- " (indented by level). Equations (OMML) keep their text. Text
boxes are read once (their ``mc:Fallback`` copy is skipped). Headers, footers, footnotes and
comments are not part of the page text.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import docx

from services.domain import DocumentOpened, Page
from services.errors import CorruptFile

from .cleanup import normalize_text
from .text import Block, paginate

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
M = "{http://schemas.openxmlformats.org/officeDocument/2006/math}"
MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
_TEXT_TAGS = (
    f"{W}t",
    f"{M}t",
    f"{W}tab",
    f"{W}br",
    f"{W}cr",
    f"{W}noBreakHyphen",
    f"{W}lastRenderedPageBreak",
)
_HEADING = re.compile(r"heading\s*([1-9])", re.IGNORECASE)
BREAK = "\x0c"  # marks a page break inside a paragraph's text


def _style_levels(document: Any) -> tuple[dict[str, int], set[str]]:
    """style id -> heading level (Title 0, Heading N -> N, or based on one); ids of list styles."""
    levels: dict[str, int] = {}
    lists: set[str] = set()
    for style in document.styles:
        try:
            name = (style.name or "").strip()
            if name.lower().startswith("list"):
                lists.add(style.style_id)
            if name.lower() == "title":
                levels[style.style_id] = 0
                continue
            if name.lower().startswith("toc"):
                continue
            current, depth = style, 0
            while current is not None and depth < 6:
                match = _HEADING.fullmatch((current.name or "").strip())
                if match:
                    levels[style.style_id] = int(match.group(1))
                    break
                current, depth = current.base_style, depth + 1
        except Exception:  # a broken style must not cost the document
            continue
    return levels, lists


def _run_text(p: Any) -> str:
    skip = (
        {id(x) for fb in p.iter(MC_FALLBACK) for x in fb.iter()}
        if p.find(f".//{MC_FALLBACK}") is not None
        else set()
    )
    out: list[str] = []
    for el in p.iter(*_TEXT_TAGS):
        if skip and id(el) in skip:
            continue
        tag = el.tag
        if tag in (f"{W}t", f"{M}t"):
            out.append(el.text or "")
        elif tag == f"{W}tab":
            out.append("\t")
        elif tag == f"{W}noBreakHyphen":
            out.append("-")
        elif tag == f"{W}lastRenderedPageBreak" or el.get(f"{W}type") == "page":
            out.append(BREAK)
        elif tag in (f"{W}br", f"{W}cr"):
            out.append("\n")
    return "".join(out)


class _Reader:
    def __init__(self, document: Any) -> None:
        self.levels, self.lists = _style_levels(document)

    def paragraph(self, p: Any) -> Iterator[Block]:
        ppr = p.find(f"{W}pPr")
        style = ppr.find(f"{W}pStyle") if ppr is not None else None
        style_id = style.get(f"{W}val") if style is not None else None
        level = self.levels.get(style_id or "")
        outline = ppr.find(f"{W}outlineLvl") if ppr is not None else None
        outline_val = outline.get(f"{W}val", "") if outline is not None else ""
        if level is None and outline_val.isdigit() and int(outline_val) < 9:
            level = int(outline_val) + 1
        numbered = ppr is not None and ppr.find(f"{W}numPr") is not None
        text = _run_text(p)
        if level is None and (numbered or style_id in self.lists) and text.strip(BREAK).strip():
            ilvl = ppr.find(f"{W}numPr/{W}ilvl") if ppr is not None else None
            depth = (
                int(ilvl.get(f"{W}val") or 0)
                if ilvl is not None and (ilvl.get(f"{W}val") or "").isdigit()
                else 0
            )
            text = "  " * min(depth, 8) + "- " + text.lstrip(BREAK)
        page_break = ppr is not None and ppr.find(f"{W}pageBreakBefore") is not None
        for i, piece in enumerate(text.split(BREAK)):
            yield Block(
                piece,
                heading=level if level is not None and piece.strip() else None,
                page_break=page_break if i == 0 else True,
            )

    def table(self, tbl: Any) -> Block:
        rows = []
        for tr in tbl.iter(f"{W}tr"):
            if tr.getparent() is not tbl:
                continue  # nested tables are flattened into their cell's text
            cells = [" ".join(_run_text(tc).replace(BREAK, " ").split()) for tc in tr.iterchildren(f"{W}tc")]
            if any(cells):
                rows.append(" | ".join(cells))
        return Block("\n".join(rows))

    def body(self, parent: Any) -> Iterator[Block]:
        for child in parent.iterchildren():
            tag = child.tag
            if tag == f"{W}p":
                yield from self.paragraph(child)
            elif tag == f"{W}tbl":
                yield self.table(child)
            elif tag in (f"{W}sdt", f"{W}customXml", f"{W}ins", f"{W}smartTag"):
                content = child.find(f"{W}sdtContent") if tag == f"{W}sdt" else child
                if content is not None:
                    yield from self.body(content)


def read_docx(path: Path) -> Generator[DocumentOpened | Page, None, None]:
    """DocumentOpened, then every estimated page (see the module docstring)."""
    try:
        document = docx.Document(str(path))
        reader = _Reader(document)
        pages = [
            (section, normalize_text(body)) for section, body in paginate(reader.body(document.element.body))
        ]
        title = (document.core_properties.title or "").strip() or None
    except MemoryError:
        raise
    except Exception as e:
        raise CorruptFile(f"the Word file is damaged ({str(e)[:160] or type(e).__name__})") from e
    pages = [(section, body) for section, body in pages if body]
    yield DocumentOpened("docx", max(len(pages), 1), title)
    if not pages:
        yield Page(1, "≈1", (), "", "skipped", "empty: the document contains no text")
    for number, (section, body) in enumerate(pages, start=1):
        yield Page(number, f"≈{number}", section, body, "text")
