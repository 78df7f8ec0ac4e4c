"""Page 1, keep-only: everything outside the layout profile's kept zones is removed by position.

What a character, image or path *is* does not matter outside the kept zones: text goes whatever
its font, encoding or render mode (a ToUnicode map that lies, Type3 glyphs), and so do images and
vector paths (text drawn as outlines). Inside the kept zones the identifier recognisers still run,
and text nobody can see (invisible render mode, white, transparent, in a hidden layer, outside the
crop box) is removed wherever it is: it can only hide things. Removal is MuPDF's applied
redaction: the content is deleted from the page's streams, not covered.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pymupdf

from medserve.anonymize.errors import ExamRejected
from medserve.anonymize.layouts import KeptZones, LayoutProfile, locate, match_layout
from medserve.anonymize.recognisers import Recognisers
from medserve.anonymize.textlines import Row, page_chars, read_rows

INVISIBLE_RENDER_MODE = 3
WHITE_LEVEL = 0.95  # every colour channel at least this light counts as white on white
# Kept rectangles grow by this much: MuPDF removes a glyph whose box touches a redaction, and
# glyph boxes of one line differ slightly.
KEEP_MARGIN_POINTS = 0.5


@dataclass
class PageOneResult:
    """What keep-only did to page 1 (counts only, never content)."""

    profile: LayoutProfile
    zones: KeptZones
    identifiers_removed: int


def _char_keys(page: pymupdf.Page) -> set[tuple[str, float, float]]:
    return {(c.char, round(c.box.x0, 1), round(c.box.y0, 1)) for c in page_chars(page)}


def reveal_hidden_layers(document: pymupdf.Document) -> tuple[pymupdf.Document, list[pymupdf.Rect]]:
    """Drop the optional-content configuration; return the re-opened document and the boxes of
    page-1 text that was in a hidden layer (MuPDF neither extracts nor redacts hidden content, and
    without the configuration it would show)."""
    if not document.get_ocgs():
        return document, []
    visible = _char_keys(document[0])
    document.xref_set_key(document.pdf_catalog(), "OCProperties", "null")
    revealed = pymupdf.open("pdf", document.tobytes())  # MuPDF reads the OC state at open
    document.close()
    hidden = [
        c.box
        for c in page_chars(revealed[0])
        if (c.char, round(c.box.x0, 1), round(c.box.y0, 1)) not in visible
    ]
    return revealed, hidden


def complement(area: pymupdf.Rect, kept: list[pymupdf.Rect]) -> list[pymupdf.Rect]:
    """Rectangles covering `area` minus the union of `kept` (bands merged where they repeat)."""
    inner = (y for r in kept for y in (r.y0, r.y1) if area.y0 < y < area.y1)
    ys = sorted({area.y0, area.y1, *inner})
    out: list[pymupdf.Rect] = []
    previous: list[tuple[float, float]] | None = None
    for top, bottom in itertools.pairwise(ys):
        middle = (top + bottom) / 2
        covering = sorted((r.x0, r.x1) for r in kept if r.y0 < middle < r.y1)
        gaps: list[tuple[float, float]] = []
        x = area.x0
        for x0, x1 in covering:
            if x0 > x:
                gaps.append((x, min(x0, area.x1)))
            x = max(x, x1)
        if x < area.x1:
            gaps.append((x, area.x1))
        if gaps and previous == gaps:  # same gaps as the band above: extend those rectangles
            for rect in out[-len(gaps) :]:
                rect.y1 = bottom
        else:
            out += [pymupdf.Rect(x0, top, x1, bottom) for x0, x1 in gaps]
        previous = gaps
    return [r for r in out if not r.is_empty]


def hidden_text(page: pymupdf.Page, crop: pymupdf.Rect) -> list[pymupdf.Rect]:
    """Boxes of text a reader cannot see; removed regardless of what it says or where it is."""
    rects: list[pymupdf.Rect] = []
    for span in page.get_texttrace():
        bbox = pymupdf.Rect(span["bbox"])
        colour = span.get("color") or ()
        hidden = (
            span["type"] == INVISIBLE_RENDER_MODE
            or span.get("opacity", 1.0) == 0
            or (span["type"] == 0 and len(colour) > 0 and min(colour) >= WHITE_LEVEL)
            or not crop.contains(bbox)
        )
        if hidden and not bbox.is_empty:
            rects.append(bbox)
    return rects


class PageOneRedactor:
    """Keeps only the matched profile's zones of page 1, minus any identifier inside them."""

    def __init__(self, layouts: list[LayoutProfile], recognisers: Recognisers) -> None:
        self.layouts = layouts
        self.recognisers = recognisers

    def _match(self, page: pymupdf.Page, page_two: pymupdf.Rect) -> tuple[LayoutProfile, list[Row]]:
        """The page's profile and rows; `unknown_layout` if no profile fits."""
        rows = read_rows(page)
        profile = match_layout(self.layouts, rows, page_two)
        if profile is None:
            raise ExamRejected("unknown_layout", "no layout profile matches this exam")
        return profile, rows

    def redact(
        self, page: pymupdf.Page, page_two: pymupdf.Rect, hidden: list[pymupdf.Rect] | None = None
    ) -> PageOneResult:
        """Keep only the matched profile's zones of `page` (in place); `page_two` is the exam's
        page-2 rectangle (part of the match), `hidden` boxes of text known to be hidden already
        (see `reveal_hidden_layers`)."""
        original_crop = pymupdf.Rect(page.cropbox)
        document, xref = page.parent, page.xref
        crop_key = document.xref_get_key(xref, "CropBox")
        # Work in mediabox coordinates so everything outside the crop box is removed too. The PDF
        # key is swapped directly: Page.set_cropbox() refuses media boxes that start below zero.
        document.xref_set_key(xref, "CropBox", document.xref_get_key(xref, "MediaBox")[1])
        try:
            profile, rows = self._match(page, page_two)
            zones = locate(profile, rows, page.rect)
            if zones.missing:
                raise ExamRejected(
                    "unknown_layout",
                    f"layout {profile.name}: kept parts not found: {', '.join(zones.missing)}",
                )
            grow = pymupdf.Rect(-1, -1, 1, 1) * KEEP_MARGIN_POINTS
            kept = [(r + grow) & original_crop for r in zones.rects()]
            kept = [r for r in kept if not r.is_empty]
            removals = complement(page.rect, kept)
            identifiers = self.identifiers_in_regions(rows, zones)
            removals += identifiers + (hidden or []) + hidden_text(page, original_crop)
            for rect in removals:
                page.add_redact_annot(rect, fill=False)
            page.apply_redactions(
                images=pymupdf.PDF_REDACT_IMAGE_REMOVE,
                graphics=pymupdf.PDF_REDACT_LINE_ART_REMOVE_IF_TOUCHED,
                text=pymupdf.PDF_REDACT_TEXT_REMOVE,
            )
        finally:
            document.xref_set_key(xref, "CropBox", crop_key[1] if crop_key[0] != "null" else "null")
        return PageOneResult(profile, zones, len(identifiers))

    def identifiers_in_regions(self, rows: list[Row], zones: KeptZones) -> list[pymupdf.Rect]:
        """Boxes of every recogniser hit in the kept regions (a name in the report text)."""
        rects: list[pymupdf.Rect] = []
        regions = list(zones.regions.values())
        for row in rows:
            for segment in row.segments:
                centre = (segment.bbox.tl + segment.bbox.br) / 2
                if not any(region.contains(centre) for region in regions):
                    continue
                for hit in self.recognisers.find(segment.text):
                    rect = segment.cover(hit.start, hit.end)
                    if rect is not None:
                        rects.append(rect)
        return rects
