"""OCR of page regions with Tesseract (through PyMuPDF), and its positive control.

OCR can fail silently (missing language data, a broken install) and then "finds no text" in every
region. So before any region is trusted, a rendered control text must be read back correctly; if
it is not, OCR is declared unavailable and exams fail verification instead of passing it.
"""

from __future__ import annotations

from functools import lru_cache

import pymupdf
from PIL import Image

from medserve.anonymize.identifiers import fold

CONTROL_TEXT = "CRM-SP 104729 Cardiologista"
CONTROL_MUST_READ = ("104729", "cardiologista")


class OcrUnavailable(RuntimeError):
    """Tesseract (or its language data) is missing or failed the positive control."""


def ocr_pixmap(pixmap: pymupdf.Pixmap, language: str) -> str:
    """The text Tesseract reads in `pixmap`."""
    # The pixmap goes onto a page of its own size (1 px = 1 pt, so dpi=72 keeps its resolution):
    # Pixmap.pdfocr_tobytes() returned no text here, Page.get_textpage_ocr() does.
    with pymupdf.open() as document:
        page = document.new_page(width=pixmap.width, height=pixmap.height)
        page.insert_image(page.rect, pixmap=pixmap)
        try:
            textpage = page.get_textpage_ocr(language=language, dpi=72, full=True)
        except (RuntimeError, pymupdf.mupdf.FzErrorBase) as error:  # no language or tessdata
            raise OcrUnavailable(f"tesseract failed: {type(error).__name__}") from error
        return page.get_text(textpage=textpage)


def ocr_image(image: Image.Image, language: str) -> str:
    """The text Tesseract reads in a Pillow image (converted to grey)."""
    grey = image.convert("L")
    pixmap = pymupdf.Pixmap(pymupdf.csGRAY, grey.width, grey.height, grey.tobytes(), False)
    return ocr_pixmap(pixmap, language)


def ocr_region(page: pymupdf.Page, region: pymupdf.Rect, dpi: int, language: str) -> str:
    """OCR one region of a page rendered at `dpi`."""
    pixmap = page.get_pixmap(dpi=dpi, clip=region, colorspace=pymupdf.csGRAY, alpha=False)
    return ocr_pixmap(pixmap, language)


@lru_cache
def positive_control(language: str, dpi: int) -> None:
    """Read a rendered control text; raises `OcrUnavailable` unless OCR reads it back.

    Cached per process: one control per worker, not per exam.
    """
    with pymupdf.open() as document:
        page = document.new_page(width=300, height=60)
        # 8 pt: about the smallest text on a CRM stamp, so the control is no easier than the job.
        page.insert_text((10, 35), CONTROL_TEXT, fontsize=8, fontname="helv")
        text = fold(ocr_region(page, page.rect, dpi, language))
    missing = [word for word in CONTROL_MUST_READ if word not in text]
    if missing:
        raise OcrUnavailable(
            f"OCR positive control failed at {dpi} DPI ({language}): did not read {missing}"
        )
