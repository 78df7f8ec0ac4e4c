"""A page's text as visual rows of segments, each character with its box.

Built from characters rather than MuPDF's lines because a label and its value may be drawn as
separate strings far apart in the content stream (an incremental edit, another tool), and a table
puts a label and its value in one row but far apart (two segments of one row).
"""

from __future__ import annotations

from dataclasses import dataclass

import pymupdf

# Extraction without clipping to the mediabox: text placed off the page is still text in the file.
EXTRACT_FLAGS = pymupdf.TEXTFLAGS_RAWDICT & ~pymupdf.TEXT_MEDIABOX_CLIP
# Layout tolerances, in multiples of the font size.
BASELINE_TOLERANCE_EMS = 0.3
WORD_GAP_EMS = 0.15
COLUMN_GAP_EMS = 2.5


@dataclass
class TextLine:
    """One segment of a row: its text and one box per character (same length)."""

    text: str
    boxes: list[pymupdf.Rect]
    bbox: pymupdf.Rect
    size: float

    def cover(self, start: int, end: int) -> pymupdf.Rect | None:
        """The box over characters `start:end`, full line height; None if they are all blank."""
        chars = zip(self.text[start:end], self.boxes[start:end], strict=True)
        boxes = [box for char, box in chars if not char.isspace()]
        if not boxes:
            return None
        rect = pymupdf.Rect(boxes[0])
        for box in boxes[1:]:
            rect |= box
        rect.y0, rect.y1 = min(rect.y0, self.bbox.y0), max(rect.y1, self.bbox.y1)
        return rect


@dataclass
class Row:
    """Segments sharing one baseline, left to right."""

    segments: list[TextLine]
    bbox: pymupdf.Rect

    @property
    def text(self) -> str:
        return "  ".join(segment.text for segment in self.segments)


@dataclass
class _Char:
    char: str
    box: pymupdf.Rect
    baseline: float
    size: float


def _chars(textpage_dict: dict) -> list[_Char]:
    return [
        _Char(char["c"], pymupdf.Rect(char["bbox"]), char["origin"][1], span["size"] or 1.0)
        for block in textpage_dict["blocks"]
        for line in block.get("lines", ())
        for span in line["spans"]
        for char in span["chars"]
    ]


def page_chars(page: pymupdf.Page, textpage: pymupdf.TextPage | None = None) -> list[_Char]:
    """Every character of `page` (or of an OCR `textpage` of it), hidden ones included."""
    return _chars(page.get_text("rawdict", flags=EXTRACT_FLAGS, textpage=textpage))


def _segment(chars: list[_Char]) -> list[TextLine]:
    """Split one baseline's characters (sorted by x) at wide gaps into segments of text."""
    segments: list[TextLine] = []
    text: list[str] = []
    boxes: list[pymupdf.Rect] = []
    previous: _Char | None = None
    for char in chars:
        if previous is not None:
            gap = char.box.x0 - previous.box.x1
            if gap > COLUMN_GAP_EMS * char.size:
                segments.append(_line(text, boxes, previous.size))
                text, boxes = [], []
            elif gap > WORD_GAP_EMS * char.size and " " not in (char.char, previous.char):
                text.append(" ")  # words drawn as separate strings still read as words
                boxes.append(pymupdf.Rect(previous.box.x1, char.box.y0, char.box.x0, char.box.y1))
        text.append(char.char)
        boxes.append(char.box)
        previous = char
    if text and previous is not None:
        segments.append(_line(text, boxes, previous.size))
    return segments


def _line(text: list[str], boxes: list[pymupdf.Rect], size: float) -> TextLine:
    bbox = pymupdf.Rect(boxes[0])
    for box in boxes[1:]:
        bbox |= box
    return TextLine("".join(text), boxes, bbox, size)


def read_rows(page: pymupdf.Page, textpage: pymupdf.TextPage | None = None) -> list[Row]:
    """The page's text as rows (one per baseline, top to bottom) of segments."""
    chars = sorted(page_chars(page, textpage), key=lambda c: (c.baseline, c.box.x0))
    groups: list[list[_Char]] = []
    for char in chars:
        if groups and abs(char.baseline - groups[-1][0].baseline) <= (
            BASELINE_TOLERANCE_EMS * char.size
        ):
            groups[-1].append(char)
        else:
            groups.append([char])
    rows: list[Row] = []
    for group in groups:
        segments = _segment(sorted(group, key=lambda c: c.box.x0))
        segments = [s for s in segments if s.text.strip()]
        if segments:
            bbox = pymupdf.Rect(segments[0].bbox)
            for segment in segments[1:]:
                bbox |= segment.bbox
            rows.append(Row(segments, bbox))
    return rows
