"""Page 1: find the identifying values and delete them with applied PyMuPDF redactions.

Values are found three ways: after an identifying label (`Nome: ...` up to the next label or the
line's end), as CPF/RG/CRM numbers anywhere, and as any other occurrence of a value (or a word of a
name) already found. Text nobody can see (invisible render mode, white, transparent, in a hidden
layer, outside the crop box) is deleted whatever it says: it can only hide things.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pymupdf

from medserve.anonymize.errors import ExamRejected
from medserve.anonymize.identifiers import (
    Identifiers,
    fold,
    label_pattern,
    pattern_spans,
    squash,
)
from medserve.anonymize.settings import AnonymizerSettings

# Extraction without clipping to the mediabox: text placed off the page is still text in the file.
EXTRACT_FLAGS = pymupdf.TEXTFLAGS_RAWDICT & ~pymupdf.TEXT_MEDIABOX_CLIP
BLACK = (0.0, 0.0, 0.0)
INVISIBLE_RENDER_MODE = 3
WHITE_LEVEL = 0.95  # every colour channel at least this light counts as white on white
# Layout tolerances, in multiples of the font size.
BASELINE_TOLERANCE_EMS = 0.3
WORD_GAP_EMS = 0.15
COLUMN_GAP_EMS = 2.5


@dataclass
class TextLine:
    """One extracted line: its text and one box per character (same length)."""

    text: str
    boxes: list[pymupdf.Rect]
    bbox: pymupdf.Rect

    def cover(self, start: int, end: int, right_edge: float | None = None) -> pymupdf.Rect | None:
        """The box over characters `start:end`, full line height; None if they are all blank."""
        chars = zip(self.text[start:end], self.boxes[start:end], strict=True)
        boxes = [box for char, box in chars if not char.isspace()]
        if not boxes:
            return None
        rect = pymupdf.Rect(boxes[0])
        for box in boxes[1:]:
            rect |= box
        rect.y0, rect.y1 = min(rect.y0, self.bbox.y0), max(rect.y1, self.bbox.y1)
        if right_edge is not None:
            rect.x1 = max(rect.x1, right_edge)
        return rect


@dataclass
class _Char:
    char: str
    box: pymupdf.Rect
    baseline: float
    size: float


def _page_chars(page: pymupdf.Page) -> list[_Char]:
    return [
        _Char(char["c"], pymupdf.Rect(char["bbox"]), char["origin"][1], span["size"])
        for block in page.get_text("rawdict", flags=EXTRACT_FLAGS)["blocks"]
        for line in block.get("lines", ())
        for span in line["spans"]
        for char in span["chars"]
    ]


def _segment(chars: list[_Char]) -> list[TextLine]:
    """Split one baseline's characters (sorted by x) at wide gaps into lines of text."""
    lines: list[TextLine] = []
    text: list[str] = []
    boxes: list[pymupdf.Rect] = []
    previous: _Char | None = None
    for char in chars:
        if previous is not None:
            gap = char.box.x0 - previous.box.x1
            if gap > COLUMN_GAP_EMS * char.size:
                lines.append(_line(text, boxes))
                text, boxes = [], []
            elif gap > WORD_GAP_EMS * char.size and " " not in (char.char, previous.char):
                text.append(" ")  # words drawn as separate strings still read as words
                boxes.append(pymupdf.Rect(previous.box.x1, char.box.y0, char.box.x0, char.box.y1))
        text.append(char.char)
        boxes.append(char.box)
        previous = char
    if text:
        lines.append(_line(text, boxes))
    return lines


def _line(text: list[str], boxes: list[pymupdf.Rect]) -> TextLine:
    bbox = pymupdf.Rect(boxes[0])
    for box in boxes[1:]:
        bbox |= box
    return TextLine("".join(text), boxes, bbox)


def read_lines(page: pymupdf.Page) -> list[TextLine]:
    """The page's text as visual lines: characters on one baseline, left to right.

    Built from characters rather than MuPDF's lines because a label and its value may be drawn
    as separate strings, far apart in the content stream (an incremental edit, another tool).
    """
    chars = sorted(_page_chars(page), key=lambda c: (c.baseline, c.box.x0))
    rows: list[list[_Char]] = []
    for char in chars:
        if rows and abs(char.baseline - rows[-1][0].baseline) <= BASELINE_TOLERANCE_EMS * char.size:
            rows[-1].append(char)
        else:
            rows.append([char])
    lines: list[TextLine] = []
    for row in rows:
        lines += _segment(sorted(row, key=lambda c: c.box.x0))
    return lines


def _char_keys(page: pymupdf.Page) -> set[tuple[str, float, float]]:
    return {(c.char, round(c.box.x0, 1), round(c.box.y0, 1)) for c in _page_chars(page)}


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
        for c in _page_chars(revealed[0])
        if (c.char, round(c.box.x0, 1), round(c.box.y0, 1)) not in visible
    ]
    return revealed, hidden


class PageOneRedactor:
    """Finds and removes the identifying text of page 1 (compiled once, used for many exams)."""

    def __init__(self, settings: AnonymizerSettings) -> None:
        self.settings = settings
        self.labels = label_pattern(settings.all_identifying_labels + settings.kept_labels)
        self.identifying = {squash(label) for label in settings.all_identifying_labels}
        self.name_labels = {squash(label) for label in settings.name_labels}
        self.required = {squash(label) for label in settings.required_labels}
        self.markers = [squash(marker) for marker in settings.layout_markers]

    def redact(self, page: pymupdf.Page, hidden: list[pymupdf.Rect] | None = None) -> Identifiers:
        """Remove every identifier from `page` in place; returns the values it removed.

        `hidden` are boxes of text known to be hidden already (see `reveal_hidden_layers`).
        """
        original_crop = pymupdf.Rect(page.cropbox)
        document, xref = page.parent, page.xref
        crop_key = document.xref_get_key(xref, "CropBox")
        # Work in mediabox coordinates so text outside the crop box can be found and redacted.
        # The PDF key is swapped directly: Page.set_cropbox() refuses media boxes that start
        # below zero, which real files have.
        document.xref_set_key(xref, "CropBox", document.xref_get_key(xref, "MediaBox")[1])
        lines = read_lines(page)
        self._check_layout(lines)
        identifiers = Identifiers()
        rects = self._labelled_values(lines, identifiers)
        rects += self._occurrences(lines, identifiers)
        for rect in rects:
            page.add_redact_annot(rect, fill=BLACK)
        for rect in (hidden or []) + self._hidden_text(page, original_crop):
            page.add_redact_annot(rect, fill=False)
        page.apply_redactions(
            images=pymupdf.PDF_REDACT_IMAGE_PIXELS,
            graphics=pymupdf.PDF_REDACT_LINE_ART_NONE,
            text=pymupdf.PDF_REDACT_TEXT_REMOVE,
        )
        document.xref_set_key(xref, "CropBox", crop_key[1] if crop_key[0] != "null" else "null")
        return identifiers

    def _check_layout(self, lines: list[TextLine]) -> None:
        text = squash(" ".join(line.text for line in lines))
        if not any(marker in text for marker in self.markers):
            raise ExamRejected("unknown_layout", "page 1 has none of the layout markers")

    def _labelled_values(self, lines: list[TextLine], found: Identifiers) -> list[pymupdf.Rect]:
        rects: list[pymupdf.Rect] = []
        seen_required: set[str] = set()
        for line in lines:
            folded = fold(line.text)
            matches = list(self.labels.finditer(folded))
            for index, match in enumerate(matches):
                label = squash(match.group(1))
                if label not in self.identifying:
                    continue
                following = matches[index + 1] if index + 1 < len(matches) else None
                end = following.start() if following else len(folded)
                value = line.text[match.end() : end]
                if not value.strip():
                    continue
                found.add_value(value, is_name=label in self.name_labels)
                seen_required.add(label)
                # Whole-line coverage: up to the next label, or to the line's end.
                right = line.boxes[following.start()].x0 if following else line.bbox.x1
                rect = line.cover(match.end(), end, right_edge=right)
                if rect is not None:
                    rects.append(rect)
        missing = self.required - seen_required
        if missing:
            raise ExamRejected(
                "unknown_layout", f"page 1 lacks required fields: {', '.join(sorted(missing))}"
            )
        return rects

    def _occurrences(self, lines: list[TextLine], found: Identifiers) -> list[pymupdf.Rect]:
        """Numbers in identifier formats and repeats of found values, anywhere on the page."""
        phrases = [
            re.compile(r"\s+".join(re.escape(word) for word in value.split()))
            for value in sorted(found.values)
        ]
        names = (
            re.compile(
                r"(?<![^\W_])(" + "|".join(map(re.escape, sorted(found.names))) + r")(?![^\W_])"
            )
            if found.names
            else None
        )
        rects: list[pymupdf.Rect] = []
        for line in lines:
            folded = fold(line.text)
            spans = [(start, end) for start, end, _ in pattern_spans(folded)]
            for phrase in phrases:
                spans += [m.span() for m in phrase.finditer(folded)]
            if names is not None:
                spans += [m.span() for m in names.finditer(folded)]
            for start, end in spans:
                rect = line.cover(start, end)
                if rect is not None:
                    rects.append(rect)
        return rects

    def _hidden_text(self, page: pymupdf.Page, crop: pymupdf.Rect) -> list[pymupdf.Rect]:
        """Boxes of text a reader cannot see; deleted regardless of what it says."""
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
