"""The per-exam budget checked before the work it bounds: page sizes and image pixel counts are
read from the PDF's object dictionaries (MediaBox, CropBox, Width, Height), never by decoding or
rendering anything, so an exam that would need gigabytes is refused with a few kilobytes.
Inline images (`BI ... ID <data> EI` inside a content stream) have no object: their dictionaries
are read with MuPDF's lexer from the content streams, their data skipped, nothing decoded."""

from __future__ import annotations

import re
from collections.abc import Iterator

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


_mupdf = pymupdf.mupdf
_WHITESPACE = b" \t\r\n\f\x00"
_REFERENCE = re.compile(r"(\d{1,10}) \d{1,5} R")
_WIDTH_KEYS, _HEIGHT_KEYS = ("W", "Width"), ("H", "Height")


def _end_of_inline_data(data: bytes, start: int) -> int:
    """The offset just past the `EI` that ends inline image data starting at `start` (the first
    `EI` standing between whitespace; the end of the stream if there is none)."""
    at = start
    while (at := data.find(b"EI", at)) >= 0:
        before_ok = at > 0 and data[at - 1] in _WHITESPACE
        after_ok = at + 2 == len(data) or data[at + 2] in _WHITESPACE
        if before_ok and after_ok:
            return at + 2
        at += 2
    return len(data)


def inline_images(data: bytes) -> Iterator[tuple[int, int]]:
    """(width, height) of every inline image in a content stream, from its dictionary alone."""
    stream = _mupdf.fz_open_buffer(_mupdf.fz_new_buffer_from_copied_data(data))
    lexbuf = _mupdf.PdfLexbuf(_mupdf.PDF_LEXBUF_LARGE)
    while (token := _mupdf.pdf_lex(stream, lexbuf)) not in (_mupdf.PDF_TOK_EOF,):
        if token != _mupdf.PDF_TOK_KEYWORD or lexbuf.m_internal.scratch != "BI":
            continue
        sizes = {"w": 0, "h": 0}
        key = ""
        while (token := _mupdf.pdf_lex(stream, lexbuf)) != _mupdf.PDF_TOK_EOF:
            raw = lexbuf.m_internal
            if token == _mupdf.PDF_TOK_KEYWORD and raw.scratch == "ID":
                break
            if token == _mupdf.PDF_TOK_NAME:
                key = raw.scratch
            elif token == _mupdf.PDF_TOK_INT and key in _WIDTH_KEYS + _HEIGHT_KEYS:
                sizes["w" if key in _WIDTH_KEYS else "h"] = max(0, raw.i)
        yield sizes["w"], sizes["h"]
        _mupdf.fz_seek(stream, _end_of_inline_data(data, _mupdf.fz_tell(stream)), 0)


def _char_procs(document: pymupdf.Document, font: int) -> list[int]:
    kind, value = document.xref_get_key(font, "CharProcs")
    if kind == "xref":
        value = document.xref_object(int(value.split()[0]), compressed=True)
    return [int(number) for number in _REFERENCE.findall(value)] if kind != "null" else []


def content_streams(document: pymupdf.Document) -> set[int]:
    """Every stream drawn as content: pages' contents, forms (appearances included), tiling
    patterns, Type3 glyph procedures."""
    streams = {xref for page in document for xref in page.get_contents()}
    for xref in range(1, document.xref_length()):
        if document.xref_get_key(xref, "Subtype") == ("name", "/Type3"):
            streams.update(_char_procs(document, xref))
        if not document.xref_is_stream(xref):
            continue
        form = document.xref_get_key(xref, "Subtype") == ("name", "/Form")
        if form or document.xref_get_key(xref, "PatternType") == ("int", "1"):
            streams.add(xref)
    return {xref for xref in streams if 0 < xref < document.xref_length()}


def check_streams(document: pymupdf.Document, settings: AnonymizerSettings) -> None:
    """No stream but an image's inflates beyond `max_stream_bytes` (`stream_too_large`): each is
    decoded through MuPDF's filters and discarded as it goes, so a 400 MB content stream stored
    in 0.5 MB costs its decompression, not its size. Images are bounded by their pixel count."""
    limit = settings.max_stream_bytes
    pdf = pymupdf._as_pdf_document(document)
    for xref in range(1, document.xref_length()):
        if not document.xref_is_stream(xref):
            continue
        if document.xref_get_key(xref, "Subtype") == ("name", "/Image"):
            continue
        decoded = _mupdf.fz_skip(_mupdf.pdf_open_stream_number(pdf, xref), limit + 1)
        if decoded > limit:
            raise ExamRejected("stream_too_large", f"a stream inflating beyond {limit} bytes")


def check_inline_images(document: pymupdf.Document, settings: AnonymizerSettings) -> None:
    """No inline image larger than `max_image_pixels`; `image_too_large` otherwise."""
    limit = settings.max_image_pixels
    for xref in sorted(content_streams(document)):
        data = document.xref_stream(xref) or b""
        if b"BI" not in data:  # lexing is per token in Python: only where an image may be
            continue
        for width, height in inline_images(data):
            if width * height > limit:
                raise ExamRejected(
                    "image_too_large",
                    f"an inline image of {width}x{height} pixels, limit {limit}",
                )
