"""The output document: page 1 copied alone into a new PDF, page 2 the redacted JPEG.

Copying page 1 into a fresh document leaves behind everything that hangs off the source's catalog
(JavaScript, open actions, embedded files, outlines, page labels, forms, layers, XMP, old
revisions); the page-level keys that could still carry data are removed explicitly, and the file
is written whole with garbage collection, never as an incremental update.
"""

from __future__ import annotations

import pymupdf

from medserve.anonymize.page_two import RasterPage

# Catalog entries that can carry identifiers or actions; none may exist in an output.
FORBIDDEN_CATALOG_KEYS: tuple[str, ...] = (
    "AA",
    "AcroForm",
    "Collection",
    "Dests",
    "Legal",
    "Metadata",
    "Names",
    "OCProperties",
    "OpenAction",
    "Outlines",
    "PageLabels",
    "Perms",
    "PieceInfo",
    "SpiderInfo",
    "StructTreeRoot",
    "Threads",
    "URI",
)
FORBIDDEN_PAGE_KEYS: tuple[str, ...] = (
    "AA",
    "Annots",
    "B",
    "Metadata",
    "PieceInfo",
    "StructParents",
    "Thumb",
)


def present_keys(document: pymupdf.Document, xref: int, keys: tuple[str, ...]) -> list[str]:
    """Which of `keys` the PDF object `xref` defines."""
    return [key for key in keys if document.xref_get_key(xref, key)[0] != "null"]


def _remove_keys(document: pymupdf.Document, xref: int, keys: tuple[str, ...]) -> None:
    for key in present_keys(document, xref, keys):
        document.xref_set_key(xref, key, "null")


def build_output(source: pymupdf.Document, raster: RasterPage) -> pymupdf.Document:
    """A new two-page document: the redacted page 1 of `source` and the JPEG of page 2."""
    output = pymupdf.open()
    output.insert_pdf(source, from_page=0, to_page=0, links=False, annots=False, widgets=False)
    _remove_keys(output, output[0].xref, FORBIDDEN_PAGE_KEYS)
    page = output.new_page(width=raster.width_pt, height=raster.height_pt)
    page.insert_image(page.rect, stream=raster.jpeg)
    _remove_keys(output, output.pdf_catalog(), FORBIDDEN_CATALOG_KEYS)
    output.set_metadata({})
    output.del_xml_metadata()
    return output


def serialise(document: pymupdf.Document) -> bytes:
    """The whole file rewritten with unused objects dropped (no incremental save)."""
    return document.tobytes(garbage=3, deflate=True, no_new_id=True)
