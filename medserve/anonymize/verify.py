"""Independent, fail-closed verification of a finished output, re-opened from its bytes.

The verifier is told nothing by the redactor: it looks at the output alone and runs every
identifier recogniser on everything the output holds:
- the extractable text of both pages (no clipping, hidden text included);
- every object, its strings decoded by MuPDF's own parser, and every stream that is not an image
  or a font program, decoded by MuPDF's filters, its string tokens read by MuPDF's lexer;
- metadata (which must be empty), the catalog and page keys that can hide data (none may exist);
- OCR of the whole rendered output, page 1 and page 2 (for the share `ocr_sample` of exams),
  after a positive control.
The only identifier-like text allowed is a kept field's value (the exam date) where the layout
profile, matched again on the output itself, says that field is. Any other hit fails the exam.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import pymupdf
from PIL import Image

from medserve.anonymize.document import (
    FORBIDDEN_CATALOG_KEYS,
    FORBIDDEN_PAGE_KEYS,
    present_keys,
)
from medserve.anonymize.layouts import KeptValue, LayoutProfile, locate, match_layout
from medserve.anonymize.ocr import (
    OcrUnavailable,
    ocr_rows,
    ocr_text,
    positive_control,
    render_grey,
)
from medserve.anonymize.recognisers import KINDS, Recognisers, squash
from medserve.anonymize.records import Verification
from medserve.anonymize.settings import AnonymizerSettings
from medserve.anonymize.textlines import EXTRACT_FLAGS, Row, read_rows

_mupdf = pymupdf.mupdf
# Streams that are not text: pixels and font programs (their bytes match patterns by chance).
_BINARY_SUBTYPES = ("/Image",)
_FONT_PROGRAM_KEYS = ("FontFile", "FontFile2", "FontFile3")
# Kinds whose patterns are letters only: safe to run over a whole stream's decoded bytes, where
# numbers are coordinates and operands.
_WORD_KINDS = frozenset({"name", "email"})
DARK_LEVEL = 40  # grey level (0-255) at or below which a page-2 pixel counts as burnt black


def _object_strings(obj: _mupdf.PdfObj, depth: int = 0) -> Iterator[str]:
    """Every string and name in a PDF object, decoded by MuPDF (indirect objects not followed:
    each is visited on its own)."""
    if depth > 64 or _mupdf.pdf_is_indirect(obj):
        return
    if _mupdf.pdf_is_string(obj):
        yield _mupdf.pdf_to_text_string(obj)
    elif _mupdf.pdf_is_name(obj):
        yield _mupdf.pdf_to_name(obj)
    elif _mupdf.pdf_is_array(obj):
        for index in range(_mupdf.pdf_array_len(obj)):
            yield from _object_strings(_mupdf.pdf_array_get(obj, index), depth + 1)
    elif _mupdf.pdf_is_dict(obj):
        for index in range(_mupdf.pdf_dict_len(obj)):
            yield from _object_strings(_mupdf.pdf_dict_get_val(obj, index), depth + 1)


def _stream(data: bytes) -> _mupdf.FzStream:
    return _mupdf.fz_open_buffer(_mupdf.fz_new_buffer_from_copied_data(data))


def stream_strings(data: bytes) -> Iterator[str]:
    """The string operands of a content-like stream as text: MuPDF's lexer finds each string
    token, MuPDF's parser decodes it (escapes, odd-length hex, UTF-16 with a byte-order mark)."""
    stream = _stream(data)
    lexbuf = _mupdf.PdfLexbuf(_mupdf.PDF_LEXBUF_LARGE)
    no_document = _mupdf.PdfDocument()
    start = 0
    while True:
        token = _mupdf.pdf_lex(stream, lexbuf)
        end = _mupdf.fz_tell(stream)
        if token in (_mupdf.PDF_TOK_EOF, _mupdf.PDF_TOK_ERROR):
            return
        if token == _mupdf.PDF_TOK_STRING:
            # The lexer's buffer is a C string to Python (cut at the first NUL byte): the token's
            # bytes are parsed again as one object instead.
            parsed = _mupdf.pdf_parse_stm_obj(no_document, _stream(data[start:end]), lexbuf)
            yield _mupdf.pdf_to_text_string(parsed)
        start = end


def _binary_xrefs(document: pymupdf.Document) -> set[int]:
    """Image streams and embedded font programs."""
    binary: set[int] = set()
    for xref in range(1, document.xref_length()):
        kind, value = document.xref_get_key(xref, "Subtype")
        if kind == "name" and value in _BINARY_SUBTYPES:
            binary.add(xref)
        for key in _FONT_PROGRAM_KEYS:
            kind, value = document.xref_get_key(xref, key)
            if kind == "xref":
                binary.add(int(value.split()[0]))
    return binary


@dataclass(frozen=True)
class Allowed:
    """Where (page-1 boxes) and what (folded texts) the kept field values of one output are."""

    rects: tuple[pymupdf.Rect, ...] = ()
    texts: frozenset[str] = frozenset()

    @classmethod
    def of(cls, values: list[KeptValue]) -> Allowed:
        return cls(tuple(v.value for v in values), frozenset(squash(v.text) for v in values))


class Verifier:
    """Runs every check on one output document."""

    def __init__(self, settings: AnonymizerSettings, layouts: list[LayoutProfile]) -> None:
        self.settings = settings
        self.layouts = layouts
        self.recognisers = Recognisers()  # all of them, whatever the redactor ran
        self.word_recognisers = Recognisers(frozenset(KINDS) - _WORD_KINDS)  # whole streams

    def verify(self, pdf: bytes, ocr: bool) -> Verification:
        """Check the output `pdf`; with `ocr`, OCR both pages of it too."""
        checks: list[str] = []
        failures: list[str] = []
        try:
            document = pymupdf.open("pdf", pdf)
        except (RuntimeError, pymupdf.mupdf.FzErrorBase):
            return Verification(passed=False, checks=["opens"], failures=["output_unreadable"])
        with document:
            checks.append("opens")
            failures += self._opens(document)
            if failures:
                return Verification(passed=False, checks=checks, failures=failures)
            rows = read_rows(document[0])
            profile = match_layout(self.layouts, rows, document[1].rect)
            allowed = Allowed.of(self._kept_values(profile, rows, document[0]))
            for name, check in (
                ("structure", self._structure),
                ("metadata", self._metadata),
                ("page_two_image_only", self._page_two_image_only),
            ):
                checks.append(name)
                failures += check(document)
            checks.append("objects")
            failures += self._objects(document, allowed)
            checks.append("text")
            failures += self._rows(rows, allowed, "identifier_in_text:page1")
            if ocr:
                checks.append("ocr")
                failures += self._ocr(document, allowed)
        return Verification(
            passed=not failures,
            checks=checks,
            failures=sorted(set(failures)),
            layout=profile.name if profile else None,
        )

    @staticmethod
    def _kept_values(
        profile: LayoutProfile | None, rows: list[Row], page: pymupdf.Page
    ) -> list[KeptValue]:
        """The kept field values, found again on the output by the profile."""
        if profile is None:
            return []
        return list(locate(profile, rows, page.rect).fields.values())

    def _kinds(
        self,
        text: str,
        allowed: Allowed,
        recognisers: Recognisers | None = None,
        ocr: bool = False,
    ) -> set[str]:
        """Kinds of identifier in `text` but a kept field's own value (the exam date)."""
        hits = (recognisers or self.recognisers).find(text, ocr=ocr)
        return {h.kind for h in hits if squash(text[h.start : h.end]) not in allowed.texts}

    def _rows(self, rows: list[Row], allowed: Allowed, code: str, ocr: bool = False) -> list[str]:
        failures = []
        for row in rows:
            for segment in row.segments:
                for hit in self.recognisers.find(segment.text, ocr=ocr):
                    rect = segment.cover(hit.start, hit.end)
                    centre = (rect.tl + rect.br) / 2 if rect is not None else None
                    if centre is None or not any(box.contains(centre) for box in allowed.rects):
                        failures.append(f"{code}:{hit.kind}")
        return failures

    def _opens(self, document: pymupdf.Document) -> list[str]:
        if document.is_encrypted or document.needs_pass:
            return ["output_encrypted"]
        if document.page_count != self.settings.page_count:
            return [f"output_page_count:{document.page_count}"]
        return []

    def _metadata(self, document: pymupdf.Document) -> list[str]:
        values = [v for k, v in (document.metadata or {}).items() if k != "format" and v]
        failures = ["metadata_not_empty"] if values else []
        kinds = self.recognisers.kinds_in(" ".join(values))
        failures += [f"identifier_in_metadata:{kind}" for kind in kinds]
        if document.get_xml_metadata():
            failures.append("xmp_metadata_present")
        return failures

    @staticmethod
    def _structure(document: pymupdf.Document) -> list[str]:
        failures = [
            f"catalog_key:{key}"
            for key in present_keys(document, document.pdf_catalog(), FORBIDDEN_CATALOG_KEYS)
        ]
        if document.embfile_count():
            failures.append("embedded_files")
        for page in document:
            failures += [
                f"page_key:page{page.number + 1}:{key}"
                for key in present_keys(document, page.xref, FORBIDDEN_PAGE_KEYS)
            ]
            if page.first_annot is not None or page.first_widget is not None:
                failures.append(f"annotations:page{page.number + 1}")
        return failures

    def _objects(self, document: pymupdf.Document, allowed: Allowed) -> list[str]:
        """Every object's strings and every non-binary stream's string tokens and words."""
        pdf = pymupdf._as_pdf_document(document)
        binary = _binary_xrefs(document)
        kinds: set[str] = set()
        for xref in range(1, document.xref_length()):
            texts = list(_object_strings(_mupdf.pdf_load_object(pdf, xref)))
            if document.xref_is_stream(xref) and xref not in binary:
                data = document.xref_stream(xref) or b""
                texts += stream_strings(data)
                kinds |= self._kinds(data.decode("latin-1"), allowed, self.word_recognisers)
            for text in texts:
                kinds |= self._kinds(text, allowed)
        return [f"identifier_in_objects:{kind}" for kind in sorted(kinds)]

    @staticmethod
    def _page_two_image_only(document: pymupdf.Document) -> list[str]:
        page = document[-1]
        failures = []
        if page.get_text(flags=EXTRACT_FLAGS).strip():
            failures.append("page_two_has_text")
        if page.get_fonts():
            failures.append("page_two_has_fonts")
        if len(page.get_images()) != 1:
            failures.append("page_two_not_one_image")
        return failures

    def _ocr(self, document: pymupdf.Document, allowed: Allowed) -> list[str]:
        settings = self.settings
        language, dpi = settings.ocr_language, settings.ocr_dpi
        try:
            positive_control(language, dpi)
            page_one = ocr_rows(render_grey(document[0], dpi), language, dpi / 72)
            page_two = ocr_text(self._page_two_image(document[1]), language)
        except OcrUnavailable:
            return ["ocr_unavailable"]
        failures = self._rows(page_one, allowed, "ocr_identifier:page1", ocr=True)
        kinds = sorted(self._kinds(page_two, allowed, ocr=True))
        failures += [f"ocr_identifier:page2:{kind}" for kind in kinds]
        return failures

    def _page_two_image(self, page: pymupdf.Page) -> Image.Image:
        """Page 2 as OCR reads it: the output's own JPEG decoded at about the OCR resolution
        (JPEG's DCT scaling: no full decode, no re-render), cropped to what is not black.
        Outside the crop every pixel is darker than `DARK_LEVEL`: nothing there can be read,
        and Tesseract spends a third of its time on large black areas."""
        scale = self.settings.ocr_dpi / 72
        image = Image.open(io.BytesIO(page.parent.xref_stream_raw(page.get_images()[0][0])))
        target = (round(page.rect.width * scale), round(page.rect.height * scale))
        image.draft("L", target)
        image = image.convert("L")
        if image.size != target:
            image = image.resize(target, Image.Resampling.LANCZOS)
        ink = image.point(lambda level: 255 if level > DARK_LEVEL else 0).getbbox()
        return image.crop(ink) if ink else image.crop((0, 0, 1, 1))
