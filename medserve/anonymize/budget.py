"""The per-exam budget checked before the work it bounds: page sizes and image pixel counts are
read from the PDF's object dictionaries (MediaBox, CropBox, Width, Height), never by decoding or
rendering anything, so an exam that would need gigabytes is refused with a few kilobytes."""

from __future__ import annotations

import pymupdf

from medserve.anonymize.errors import ExamRejected
from medserve.anonymize.settings import AnonymizerSettings


def _box_sides(page: pymupdf.Page) -> list[float]:
    """Sides of the page's media and crop boxes in points, as MuPDF will use them."""
    sides: list[float] = []
    for rect in (page.mediabox, page.cropbox, page.rect):
        sides += [abs(rect.width), abs(rect.height)]
    return sides


def check_pages(document: pymupdf.Document, settings: AnonymizerSettings) -> None:
    """Every page's boxes within `max_page_pt`, and the last page's raster at `dpi` within
    `max_render_pixels`; `page_too_large` otherwise."""
    limit = settings.max_page_pt
    for page in document:
        longest = max(_box_sides(page))
        if longest > limit:
            raise ExamRejected(
                "page_too_large",
                f"page {page.number + 1}: {longest:.0f} pt side, limit {limit:.0f} pt",
            )
    scale = settings.dpi / 72
    last = document[-1].rect
    pixels = round(last.width * scale) * round(last.height * scale)
    if pixels > settings.max_render_pixels:
        raise ExamRejected(
            "page_too_large",
            f"page {document.page_count}: {pixels} pixels at {settings.dpi} DPI, "
            f"limit {settings.max_render_pixels}",
        )


def _integer(document: pymupdf.Document, xref: int, key: str) -> int:
    """An integer entry of an object's dictionary (0 if absent; references are followed)."""
    kind, value = document.xref_get_key(xref, key)
    if kind == "xref":  # an indirect number: the referenced object is just that number
        value = document.xref_object(int(value.split()[0]), compressed=True)
    try:
        return max(0, int(float(value)))
    except ValueError:
        return 0


def check_images(document: pymupdf.Document, settings: AnonymizerSettings) -> None:
    """No image object in the file larger than `max_image_pixels` (Width x Height from its
    dictionary, nothing decoded); `image_too_large` otherwise. Every object is looked at, not
    only page 1's: an image can be reached through forms, patterns and annotations."""
    limit = settings.max_image_pixels
    for xref in range(1, document.xref_length()):
        if document.xref_get_key(xref, "Subtype") != ("name", "/Image"):
            continue
        width, height = _integer(document, xref, "Width"), _integer(document, xref, "Height")
        if width * height > limit:
            raise ExamRejected(
                "image_too_large", f"an image of {width}x{height} pixels, limit {limit}"
            )
