"""Fail-closed verification of a finished output, re-opened from its bytes.

An output passes only if every check passes: no identifier (the values read before redaction,
the words of names, CPF/RG/CRM numbers) anywhere in its text, metadata or object streams; no
catalog or page entry that can hide data; page 2 a single image without text; and, if enabled,
OCR of the burnt page-2 regions finds no identifier after a successful positive control.
"""

from __future__ import annotations

import io
import re

import pymupdf
from PIL import Image

from medserve.anonymize.document import (
    FORBIDDEN_CATALOG_KEYS,
    FORBIDDEN_PAGE_KEYS,
    present_keys,
)
from medserve.anonymize.identifiers import Identifiers
from medserve.anonymize.ocr import OcrUnavailable, ocr_image, positive_control
from medserve.anonymize.records import Verification
from medserve.anonymize.settings import AnonymizerSettings

_TEXT_FLAGS = pymupdf.TEXTFLAGS_TEXT & ~pymupdf.TEXT_MEDIABOX_CLIP
_HEX_STRING = re.compile(r"<([0-9A-Fa-f\s]{4,})>")
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{1,3})")


def readable_strings(source: str) -> str:
    """PDF object source with hex strings and octal escapes decoded, so values show as text."""

    def hex_string(match: re.Match[str]) -> str:
        raw = bytes.fromhex("".join(match.group(1).split()).ljust(2, "0"))
        if raw.startswith(b"\xfe\xff"):
            return raw[2:].decode("utf-16-be", errors="replace")
        return raw.decode("latin-1")

    decoded = _HEX_STRING.sub(hex_string, source)
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8) & 0xFF), decoded)


class Verifier:
    """Runs every check on one output document."""

    def __init__(self, settings: AnonymizerSettings) -> None:
        self.settings = settings

    def verify(self, pdf: bytes, identifiers: Identifiers) -> Verification:
        checks: list[str] = []
        failures: list[str] = []
        try:
            document = pymupdf.open("pdf", pdf)
        except (RuntimeError, pymupdf.mupdf.FzErrorBase):
            return self._result(["opens"], ["output_unreadable"], identifiers)
        with document:
            for name, check in (
                ("opens", self._opens),
                ("text", self._text),
                ("metadata", self._metadata),
                ("structure", self._structure),
                ("objects", self._objects),
                ("page_two_image_only", self._page_two_image_only),
            ):
                checks.append(name)
                failures += check(document, identifiers)
                if failures and name == "opens":
                    break
            ocr_regions = 0
            if self.settings.ocr_check and not failures:
                checks.append("ocr")
                ocr_failures, ocr_regions = self._ocr(document, identifiers)
                failures += ocr_failures
        return self._result(checks, failures, identifiers, ocr_regions)

    @staticmethod
    def _result(
        checks: list[str], failures: list[str], identifiers: Identifiers, ocr_regions: int = 0
    ) -> Verification:
        return Verification(
            passed=not failures,
            checks=checks,
            failures=failures,
            identifiers_hunted=len(identifiers),
            ocr_regions=ocr_regions,
        )

    def _opens(self, document: pymupdf.Document, _: Identifiers) -> list[str]:
        if document.is_encrypted or document.needs_pass:
            return ["output_encrypted"]
        if document.page_count != self.settings.page_count:
            return [f"output_page_count:{document.page_count}"]
        return []

    @staticmethod
    def _text(document: pymupdf.Document, identifiers: Identifiers) -> list[str]:
        failures = []
        for page in document:
            kinds = identifiers.found_in(page.get_text(flags=_TEXT_FLAGS))
            failures += [f"identifier_in_text:page{page.number + 1}:{kind}" for kind in kinds]
        return failures

    @staticmethod
    def _metadata(document: pymupdf.Document, identifiers: Identifiers) -> list[str]:
        failures = []
        values = [v for k, v in (document.metadata or {}).items() if k not in {"format"} and v]
        if any(values):
            failures.append("metadata_not_empty")
        failures += [f"identifier_in_metadata:{k}" for k in identifiers.found_in(" ".join(values))]
        if document.get_xml_metadata():
            failures.append("xmp_metadata_present")
        return failures

    @staticmethod
    def _structure(document: pymupdf.Document, _: Identifiers) -> list[str]:
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

    @staticmethod
    def _objects(document: pymupdf.Document, identifiers: Identifiers) -> list[str]:
        """Every object's source and every non-image stream, decoded, searched for identifiers."""
        kinds: set[str] = set()
        for xref in range(1, document.xref_length()):
            source = document.xref_object(xref, compressed=False)
            text = readable_strings(source)
            if document.xref_is_stream(xref) and "/Image" not in source:
                stream = document.xref_stream(xref) or b""
                text += "\n" + readable_strings(stream.decode("latin-1"))
            kinds.update(identifiers.found_in(text))
        return [f"identifier_in_objects:{kind}" for kind in sorted(kinds)]

    @staticmethod
    def _page_two_image_only(document: pymupdf.Document, _: Identifiers) -> list[str]:
        page = document[-1]
        failures = []
        if page.get_text(flags=_TEXT_FLAGS).strip():
            failures.append("page_two_has_text")
        if page.get_fonts():
            failures.append("page_two_has_fonts")
        if len(page.get_images()) != 1:
            failures.append("page_two_not_one_image")
        return failures

    def _ocr(self, document: pymupdf.Document, identifiers: Identifiers) -> tuple[list[str], int]:
        settings = self.settings
        try:
            positive_control(settings.ocr_language, settings.ocr_dpi)
        except OcrUnavailable:
            return ["ocr_unavailable"], 0
        page = document[-1]
        margin = settings.ocr_margin_points
        area = pymupdf.Rect()
        for x0, y0, x1, y1 in settings.page_two_regions:
            area |= pymupdf.Rect(x0 - margin, y0 - margin, x1 + margin, y1 + margin)
        area &= page.rect
        # One OCR over all regions, read from the output's own JPEG, decoded at reduced scale
        # (JPEG's DCT scaling) instead of rendering the page: a full decode costs ~0.1 s.
        image = Image.open(io.BytesIO(document.xref_stream_raw(page.get_images()[0][0])))
        points_to_target = settings.ocr_dpi / 72
        image.draft(
            "L", (int(page.rect.width * points_to_target), int(page.rect.height * points_to_target))
        )
        scale = image.width / page.rect.width
        crop = image.crop(tuple(round(v * scale) for v in area))
        size = (round(area.width * points_to_target), round(area.height * points_to_target))
        text = ocr_image(
            crop.convert("L").resize(size, Image.Resampling.LANCZOS), settings.ocr_language
        )
        failures = [f"ocr_identifier:{kind}" for kind in identifiers.found_in(text)]
        return failures, len(settings.page_two_regions)
