"""OCR with Tesseract (through tesserocr's persistent API), and its positive control.

tesserocr keeps one Tesseract engine per process with the language model loaded: the same
engine and model as MuPDF's built-in OCR, at about half its CPU time per page here (no model
reload, no page re-render). The language data comes from the system (`tesseract-ocr-por`).

OCR can fail silently (missing language data, a broken install) and then "finds no text" on every
page. So before OCR is trusted, a rendered control text at the smallest size an exam carries
(7 pt) must be read back at the configured resolution; a run whose control fails refuses to
start, and a worker whose control fails fails every exam's verification.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pymupdf
from PIL import Image

from medserve.anonymize.recognisers import fold
from medserve.anonymize.textlines import Row, TextLine

CONTROL_TEXT = "CRM-SP 104729 Cardiologista"
CONTROL_MUST_READ = ("104729", "cardiologista")
CONTROL_POINTS = 7.0
# Where Debian (and the Ray image) install language data; TESSDATA_PREFIX wins if set.
TESSDATA_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata")


class OcrUnavailable(RuntimeError):
    """Tesseract (or its language data) is missing or failed the positive control."""


def tessdata_dir(language: str) -> Path:
    """The folder holding `<language>.traineddata`."""
    candidates = [os.environ["TESSDATA_PREFIX"]] if "TESSDATA_PREFIX" in os.environ else []
    for folder in map(Path, [*candidates, *TESSDATA_DIRS]):
        if (folder / f"{language}.traineddata").is_file():
            return folder
    raise OcrUnavailable(f"no {language}.traineddata (package tesseract-ocr-{language})")


@cache
def _engine(language: str):
    """One Tesseract engine per process and language (not thread-safe; workers are processes)."""
    try:
        import tesserocr
    except ImportError as error:  # a broken install: refuse, do not quarantine everything
        raise OcrUnavailable(f"tesserocr cannot load: {error}") from None
    try:
        return tesserocr.PyTessBaseAPI(path=f"{tessdata_dir(language)}/", lang=language)
    except RuntimeError as error:
        raise OcrUnavailable(f"tesseract failed to start ({language}): {error}") from None


@dataclass
class OcrWord:
    text: str
    box: pymupdf.Rect  # in the image's pixels


def ocr_lines(image: Image.Image, language: str) -> list[list[OcrWord]]:
    """The words Tesseract reads in `image`, line by line, with their pixel boxes."""
    import tesserocr

    engine = _engine(language)
    engine.SetImage(image.convert("L"))
    engine.Recognize()
    lines: list[list[OcrWord]] = []
    iterator = engine.GetIterator()
    level = tesserocr.RIL.WORD
    if iterator is None:
        return lines
    for word in tesserocr.iterate_level(iterator, level):
        try:
            text = word.GetUTF8Text(level)
        except RuntimeError:  # tesserocr raises for a word with no text
            continue
        box = word.BoundingBox(level)
        if not text or box is None:
            continue
        if not lines or word.IsAtBeginningOf(tesserocr.RIL.TEXTLINE):
            lines.append([])
        lines[-1].append(OcrWord(text, pymupdf.Rect(box)))
    return lines


def ocr_text(image: Image.Image, language: str) -> str:
    """The text Tesseract reads in `image`, one line per line."""
    return "\n".join(" ".join(w.text for w in line) for line in ocr_lines(image, language))


def ocr_rows(image: Image.Image, language: str, scale: float) -> list[Row]:
    """OCR'd lines as rows of one segment each, boxes in page points (`scale` pixels a point):
    every character carries its word's box, so a hit maps back to where it was read."""
    rows: list[Row] = []
    for line in ocr_lines(image, language):
        text: list[str] = []
        boxes: list[pymupdf.Rect] = []
        for word in line:
            box = word.box / scale
            if text:
                text.append(" ")
                boxes.append(pymupdf.Rect(boxes[-1].x1, box.y0, box.x0, box.y1))
            text.append(word.text)
            boxes += [box] * len(word.text)
        bbox = pymupdf.Rect(boxes[0])
        for box in boxes[1:]:
            bbox |= box
        rows.append(Row([TextLine("".join(text), boxes, bbox, bbox.height)], bbox))
    return rows


def render_grey(page: pymupdf.Page, dpi: int) -> Image.Image:
    pixmap = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY, alpha=False)
    return Image.frombytes("L", (pixmap.width, pixmap.height), pixmap.samples)


@cache
def positive_control(language: str, dpi: int) -> None:
    """Read a rendered 7 pt control text; raises `OcrUnavailable` unless OCR reads it back.

    Cached per process: one control per worker, not per exam.
    """
    with pymupdf.open() as document:
        page = document.new_page(width=200, height=40)
        page.insert_text((8, 24), CONTROL_TEXT, fontsize=CONTROL_POINTS, fontname="helv")
        text = fold(ocr_text(render_grey(page, dpi), language))
    missing = [word for word in CONTROL_MUST_READ if word not in text]
    if missing:
        raise OcrUnavailable(
            f"OCR positive control failed at {dpi} DPI ({language}): did not read {missing}"
        )
