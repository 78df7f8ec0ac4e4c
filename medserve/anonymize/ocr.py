"""OCR with Tesseract (through PyMuPDF), and its positive control.

OCR can fail silently (missing language data, a broken install) and then "finds no text" on every
page. So before OCR is trusted, a rendered control text at the smallest size an exam carries
(7 pt) must be read back at the configured resolution; a run whose control fails refuses to
start, and a worker whose control fails fails every exam's verification.
"""

from __future__ import annotations

from functools import lru_cache

import pymupdf
from PIL import Image

from medserve.anonymize.recognisers import fold

CONTROL_TEXT = "CRM-SP 104729 Cardiologista"
CONTROL_MUST_READ = ("104729", "cardiologista")
CONTROL_POINTS = 7.0
_OCR_ERRORS = (RuntimeError, pymupdf.mupdf.FzErrorBase)


class OcrUnavailable(RuntimeError):
    """Tesseract (or its language data) is missing or failed the positive control."""


def ocr_textpage(page: pymupdf.Page, dpi: int, language: str) -> pymupdf.TextPage:
    """An OCR text page of the whole `page` rendered at `dpi` (characters in page coordinates)."""
    try:
        return page.get_textpage_ocr(language=language, dpi=dpi, full=True)
    except _OCR_ERRORS as error:  # no language data or no tessdata
        raise OcrUnavailable(f"tesseract failed: {type(error).__name__}") from error


def ocr_image(image: Image.Image, language: str) -> str:
    """The text Tesseract reads in a Pillow image (converted to grey, 1 px read as 1 pt)."""
    grey = image.convert("L")
    pixmap = pymupdf.Pixmap(pymupdf.csGRAY, grey.width, grey.height, grey.tobytes(), False)
    # Page.get_textpage_ocr() reads text where Pixmap.pdfocr_tobytes() returned none here.
    with pymupdf.open() as document:
        page = document.new_page(width=pixmap.width, height=pixmap.height)
        page.insert_image(page.rect, pixmap=pixmap)
        return page.get_text(textpage=ocr_textpage(page, 72, language))


@lru_cache
def positive_control(language: str, dpi: int) -> None:
    """Read a rendered 7 pt control text; raises `OcrUnavailable` unless OCR reads it back.

    Cached per process: one control per worker, not per exam.
    """
    with pymupdf.open() as document:
        page = document.new_page(width=200, height=40)
        page.insert_text((8, 24), CONTROL_TEXT, fontsize=CONTROL_POINTS, fontname="helv")
        text = fold(page.get_text(textpage=ocr_textpage(page, dpi, language)))
    missing = [word for word in CONTROL_MUST_READ if word not in text]
    if missing:
        raise OcrUnavailable(
            f"OCR positive control failed at {dpi} DPI ({language}): did not read {missing}"
        )
