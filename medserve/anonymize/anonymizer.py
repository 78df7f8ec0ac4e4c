"""Anonymise one ECG exam: bytes in, a verified ZIP and its record out (or a quarantine entry).

Usable without Ray: `Anonymizer(settings).process(data, key)`. The pipeline calls the same thing
once per exam in every worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pymupdf
from ulid import ULID

from medserve.anonymize.archive import zip_single
from medserve.anonymize.budget import (
    check_images,
    check_inline_images,
    check_pages,
    check_streams,
)
from medserve.anonymize.document import build_output, serialise
from medserve.anonymize.errors import ExamRejected
from medserve.anonymize.layouts import LayoutError, LayoutProfile, load_layouts
from medserve.anonymize.ocr import OcrUnavailable, positive_control
from medserve.anonymize.page_one import PageOneRedactor, PageOneResult, reveal_hidden_layers
from medserve.anonymize.page_two import rasterise
from medserve.anonymize.recognisers import Recognisers
from medserve.anonymize.records import (
    ExamRecord,
    QuarantineRecord,
    StageSeconds,
    key_digest,
    utc_now,
)
from medserve.anonymize.settings import AnonymizerSettings
from medserve.anonymize.verify import Verifier

PDF_MAGIC = b"%PDF-"
MAGIC_WINDOW_BYTES = 1024  # the PDF spec lets the header start within the first 1 KiB
_MUPDF_ERRORS = (RuntimeError, ValueError, pymupdf.FileDataError, pymupdf.mupdf.FzErrorBase)


@dataclass
class AnonymizedExam:
    """A finished exam: the ZIP to store and its record."""

    zip_bytes: bytes
    record: ExamRecord


class EnvironmentRefused(RuntimeError):
    """This machine or configuration cannot anonymise at all: refuse to start, process nothing."""


def preflight(settings: AnonymizerSettings) -> list[LayoutProfile]:
    """The layout profiles, after checking that they load and that OCR reads its control text.

    A broken environment would otherwise quarantine every exam of a million-file run.
    """
    try:
        layouts = load_layouts(settings.layouts_dir)
    except LayoutError as error:
        raise EnvironmentRefused(str(error)) from None
    if settings.ocr_sample > 0:
        try:
            positive_control(settings.ocr_language, settings.ocr_dpi)
        except OcrUnavailable as error:
            first = str(error).splitlines()[0]
            raise EnvironmentRefused(
                f"OCR unavailable ({first}); install tesseract-ocr and "
                f"tesseract-ocr-{settings.ocr_language}"
            ) from None
    return layouts


def quarantine_record(key: str, size: int, rejection: ExamRejected) -> QuarantineRecord:
    """The quarantine entry of the input under `key` (only the key's hash is kept)."""
    return QuarantineRecord(
        ulid=str(ULID()),
        input_key_sha256=key_digest(key),
        original_size_bytes=size,
        reason=rejection.code,
        detail=rejection.detail,
    )


def check_input_size(settings: AnonymizerSettings, size: int) -> None:
    """Refuse empty and oversized inputs before reading them."""
    if size == 0:
        raise ExamRejected("empty", "zero bytes")
    if size > settings.max_input_bytes:
        raise ExamRejected("too_large", f"{size} bytes, limit {settings.max_input_bytes}")


def ocr_chosen(key: str, share: float) -> bool:
    """Whether the exam under `key` is OCR'd at sampling rate `share` (stable across re-runs)."""
    return int(key_digest(key)[:8], 16) < share * 16**8


def quiet_mupdf() -> None:
    """Keep MuPDF's own warnings off stderr: they can quote fragments of a damaged input."""
    pymupdf.TOOLS.mupdf_display_errors(False)
    pymupdf.TOOLS.mupdf_display_warnings(False)


class Anonymizer:
    """Anonymises exams with one set of settings; build once per worker, call per exam."""

    def __init__(
        self,
        settings: AnonymizerSettings,
        layouts: list[LayoutProfile] | None = None,
        redactor_recognisers: Recognisers | None = None,
    ) -> None:
        """`layouts` default to the settings' (shipped plus site); `redactor_recognisers` to all
        of them (the verifier always runs all, whatever the redactor uses)."""
        self.settings = settings
        self.layouts = layouts if layouts is not None else load_layouts(settings.layouts_dir)
        self.page_one = PageOneRedactor(self.layouts, redactor_recognisers or Recognisers())
        self.verifier = Verifier(settings, self.layouts)
        quiet_mupdf()

    def process(self, data: bytes, key: str) -> AnonymizedExam | QuarantineRecord:
        """Anonymise `data` (the object stored under `key`), or say why it is quarantined.

        Never raises for a bad exam: whatever goes wrong, the exam is quarantined, not output.
        """
        try:
            return self.anonymize(data, key)
        except ExamRejected as rejection:
            return self.quarantine(key, len(data), rejection)
        except Exception as error:  # fail closed: an unforeseen failure never reaches the output
            rejection = ExamRejected("anonymizer_error", type(error).__name__)
            return self.quarantine(key, len(data), rejection)

    def quarantine(self, key: str, size: int, rejection: ExamRejected) -> QuarantineRecord:
        return quarantine_record(key, size, rejection)

    def check_size(self, size: int) -> None:
        check_input_size(self.settings, size)

    def anonymize(self, data: bytes, key: str) -> AnonymizedExam:
        """Anonymise and verify one exam; raises `ExamRejected` with a reason otherwise."""
        seconds = StageSeconds()
        started = time.perf_counter()
        self.check_size(len(data))
        source, hidden = self._open(data)
        with source:
            seconds.open = time.perf_counter() - started
            mark = time.perf_counter()
            page_one = self._redact_page_one(source, hidden)
            profile = page_one.profile
            seconds.page_one = time.perf_counter() - mark
            raster = rasterise(source[1], profile.page_two.tracing_area, self.settings)
            seconds.render, seconds.encode = raster.render_seconds, raster.encode_seconds
            mark = time.perf_counter()
            with build_output(source, raster) as output:
                pdf = serialise(output)
            seconds.build = time.perf_counter() - mark
        mark = time.perf_counter()
        ocr = ocr_chosen(key, self.settings.ocr_sample)
        verification = self.verifier.verify(pdf, ocr)
        seconds.verify = time.perf_counter() - mark
        if not verification.passed:
            raise ExamRejected("verification_failed", ",".join(verification.failures))
        mark = time.perf_counter()
        ulid = str(ULID())
        created = utc_now()
        archive = zip_single(f"{ulid}.pdf", pdf, self.settings.zip_level, created)
        seconds.zip = time.perf_counter() - mark
        record = ExamRecord(
            ulid=ulid,
            input_key_sha256=key_digest(key),
            created_at=created,
            original_size_bytes=len(data),
            pdf_size_bytes=len(pdf),
            output_size_bytes=len(archive),
            compression_ratio=round(len(pdf) / len(archive), 4),
            output_to_input_ratio=round(len(archive) / len(data), 4),
            dpi=self.settings.dpi,
            colour_mode=self.settings.colour_mode,
            jpeg_quality=self.settings.jpeg_quality,
            page_count=self.settings.page_count,
            layout=profile.name,
            identifiers_removed=page_one.identifiers_removed,
            ocr_verified=ocr,
            seconds=seconds,
            verification=verification,
        )
        return AnonymizedExam(zip_bytes=archive, record=record)

    def _open(self, data: bytes) -> tuple[pymupdf.Document, list[pymupdf.Rect]]:
        """The exam opened and checked, with any hidden layers revealed (see page_one)."""
        if PDF_MAGIC not in data[:MAGIC_WINDOW_BYTES]:
            raise ExamRejected("not_pdf", "no %PDF- header in the first 1024 bytes")
        try:
            document = pymupdf.open("pdf", data)
        except _MUPDF_ERRORS as error:
            raise ExamRejected("corrupt", f"cannot be opened ({type(error).__name__})") from None
        if document.needs_pass or document.is_encrypted:
            document.close()
            raise ExamRejected("encrypted", "password-protected PDF")
        if document.page_count != self.settings.page_count:
            count = document.page_count
            document.close()
            raise ExamRejected(
                "wrong_page_count", f"{count} pages, expected {self.settings.page_count}"
            )
        try:
            # The budget, from object dictionaries alone: before any text, image or render.
            check_pages(document, self.settings)
            check_images(document, self.settings)
            check_streams(document, self.settings)  # before any stream is read whole
            check_inline_images(document, self.settings)
        except ExamRejected:
            document.close()
            raise
        except _MUPDF_ERRORS as error:
            document.close()
            raise ExamRejected("corrupt", f"objects unreadable ({type(error).__name__})") from None
        try:
            return reveal_hidden_layers(document)
        except _MUPDF_ERRORS as error:
            raise ExamRejected("corrupt", f"layers unreadable ({type(error).__name__})") from None

    def _redact_page_one(
        self, source: pymupdf.Document, hidden: list[pymupdf.Rect]
    ) -> PageOneResult:
        try:
            return self.page_one.redact(source[0], source[1].rect, hidden)
        except ExamRejected:
            raise
        except _MUPDF_ERRORS as error:
            raise ExamRejected("corrupt", f"page 1 unreadable ({type(error).__name__})") from None
