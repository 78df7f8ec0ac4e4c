"""A picture of what keep-only will do to one exam, for an operator checking a layout profile.

Both source pages side by side: kept zones outlined in green, the areas that will be burnt or
removed tinted red, every identifier recogniser hit boxed in magenta (inside kept regions these are
what the recognisers remove; outside, position removes them anyway). The picture shows the exam's
own content, identifiers included: it is for the site's operators, never an output.
"""

from __future__ import annotations

import io

import pymupdf
from PIL import Image, ImageDraw

from medserve.anonymize.errors import ExamRejected
from medserve.anonymize.layouts import LayoutProfile, locate, match_layout
from medserve.anonymize.page_one import complement
from medserve.anonymize.recognisers import Recognisers
from medserve.anonymize.textlines import read_rows

KEPT = (0, 160, 0, 255)
BURNT = (220, 0, 0, 70)
HIT = (200, 0, 200, 255)
GAP_PIXELS = 16


class _Canvas:
    """A rendered page with drawing in page coordinates."""

    def __init__(self, page: pymupdf.Page, dpi: int) -> None:
        pixmap = page.get_pixmap(dpi=dpi, alpha=False)
        self.image = Image.frombytes("RGB", (pixmap.width, pixmap.height), pixmap.samples)
        self.overlay = Image.new("RGBA", self.image.size, (0, 0, 0, 0))
        self.draw = ImageDraw.Draw(self.overlay)
        self.scale = dpi / 72

    def box(self, rect: pymupdf.Rect) -> tuple[float, float, float, float]:
        return tuple(v * self.scale for v in rect)  # type: ignore[return-value]

    def fill(self, rect: pymupdf.Rect, colour: tuple[int, int, int, int]) -> None:
        self.draw.rectangle(self.box(rect), fill=colour)

    def outline(self, rect: pymupdf.Rect, colour: tuple[int, int, int, int], width: int) -> None:
        self.draw.rectangle(self.box(rect), outline=colour, width=width)

    def result(self) -> Image.Image:
        return Image.alpha_composite(self.image.convert("RGBA"), self.overlay).convert("RGB")


def _profile(
    layouts: list[LayoutProfile], name: str | None, document: pymupdf.Document
) -> LayoutProfile:
    if name is not None:
        chosen = [p for p in layouts if p.name == name]
        if not chosen:
            known = ", ".join(sorted(p.name for p in layouts))
            raise ExamRejected("unknown_layout", f"no layout named {name!r} (known: {known})")
        return chosen[0]
    profile = match_layout(layouts, read_rows(document[0]), document[1].rect)
    if profile is None:
        raise ExamRejected("unknown_layout", "no layout profile matches; try --layout NAME")
    return profile


def preview_png(
    pdf: bytes,
    layouts: list[LayoutProfile],
    layout: str | None = None,
    dpi: int = 100,
) -> tuple[bytes, LayoutProfile]:
    """The PNG of both pages with kept zones, burnt areas and recogniser hits; raises
    `ExamRejected` if no profile fits (or `layout` names none)."""
    recognisers = Recognisers()
    with pymupdf.open("pdf", pdf) as document:
        if document.page_count < 2:
            raise ExamRejected("wrong_page_count", f"{document.page_count} pages, expected 2")
        profile = _profile(layouts, layout, document)
        page_one, page_two = document[0], document[1]
        rows = read_rows(page_one)
        zones = locate(profile, rows, page_one.rect)
        first = _Canvas(page_one, dpi)
        for rect in complement(page_one.rect, zones.rects()):
            first.fill(rect, BURNT)
        for rect in zones.rects():
            first.outline(rect, KEPT, 3)
        for row in rows:
            for segment in row.segments:
                for hit in recognisers.find(segment.text):
                    rect = segment.cover(hit.start, hit.end)
                    if rect is not None:
                        first.outline(rect, HIT, 2)
        second = _Canvas(page_two, dpi)
        area = pymupdf.Rect(profile.page_two.tracing_area)
        for rect in complement(page_two.rect, [area]):
            second.fill(rect, BURNT)
        second.outline(area, KEPT, 3)
        left, right = first.result(), second.result()
    sheet = Image.new(
        "RGB",
        (left.width + GAP_PIXELS + right.width, max(left.height, right.height)),
        "white",
    )
    sheet.paste(left, (0, 0))
    sheet.paste(right, (left.width + GAP_PIXELS, 0))
    buffer = io.BytesIO()
    sheet.save(buffer, "PNG")
    return buffer.getvalue(), profile
