"""An independent leak check for anonymised exams (deliberately not the anonymiser's own code).

It hunts the values the generator planted, in every form they could take in a PDF: extracted text
(no clipping, hidden text included), metadata, and the raw bytes of every object and decoded
stream, as UTF-8, Latin-1 and UTF-16BE; and, for what only shows when drawn (outlines, images, a
font whose ToUnicode map lies), in the OCR of the rendered pages by the `tesseract` program.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tempfile
import unicodedata
import zipfile
from pathlib import Path

import pymupdf

from medserve.anonymize.synthetic import SyntheticExam


def plain(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).lower().split())


def planted_values(exam: SyntheticExam) -> list[str]:
    """Every identifying string planted in `exam`, plus digit-only forms of document numbers."""
    values = set(exam.identifiers.values()) | set(exam.extra_identifiers)
    digits = {re.sub(r"\D", "", v) for v in values if re.fullmatch(r"[\d.\-/ ]{9,}", v)}
    return sorted(v for v in values | digits if len(v) >= 4)


def pdf_from_zip(archive: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        assert zipped.testzip() is None
        (name,) = zipped.namelist()
        assert name.endswith(".pdf")
        return zipped.read(name)


def searchable_forms(document: pymupdf.Document) -> str:
    parts = [page.get_text(flags=0) for page in document]
    parts += [str(v) for v in (document.metadata or {}).values()]
    parts.append(document.get_xml_metadata())
    blobs = []
    for xref in range(1, document.xref_length()):
        source = document.xref_object(xref, compressed=False)
        blobs.append(source.encode("latin-1", "replace"))
        if "/Image" in source:  # decoded pixels are no text; the raw stream is in `raw` already
            continue
        if document.xref_is_stream(xref):
            try:
                blobs.append(document.xref_stream(xref) or b"")
            except (RuntimeError, pymupdf.mupdf.FzErrorBase):
                blobs.append(document.xref_stream_raw(xref) or b"")
    for blob in blobs:
        parts += [blob.decode("utf-8", "replace"), blob.decode("latin-1")]
        parts.append(blob.replace(b"\x00", b"").decode("latin-1"))  # UTF-16BE text, ASCII part
    return plain("\n".join(parts))


def _in_raw_bytes(value: str, raw: bytes) -> bool:
    forms = {value.encode("utf-8"), value.encode("latin-1", "ignore"), value.encode("utf-16-be")}
    return any(form and form in raw for form in forms)


def leaks(pdf: bytes, exam: SyntheticExam) -> list[str]:
    """Which planted values (by index, never the value) are still somewhere in `pdf`."""
    with pymupdf.open("pdf", pdf) as document:
        haystack = searchable_forms(document)
    return [
        f"value#{i}"
        for i, v in enumerate(planted_values(exam))
        if plain(v) in haystack or _in_raw_bytes(v, pdf)
    ]


# --- what a reader of the rendered output sees ------------------------------------------------

OCR_DPI = 200
_NAME_WORD_MIN = 5  # shorter words ("Lima", "Cruz") turn up in OCR noise of a tracing
_NUMBER_MIN_DIGITS = 7


def ocr_text(pdf: bytes) -> str:
    """Both pages rendered at 200 DPI and read by the `tesseract` program (not the anonymiser's
    OCR path through MuPDF), folded."""
    texts = []
    with tempfile.TemporaryDirectory(prefix="ocr-check-") as tmp, pymupdf.open("pdf", pdf) as doc:
        for page in doc:
            image = Path(tmp) / f"page-{page.number}.png"
            page.get_pixmap(dpi=OCR_DPI, colorspace=pymupdf.csGRAY).save(image)
            result = subprocess.run(
                ["tesseract", str(image), "-", "-l", "por"],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "OMP_THREAD_LIMIT": "1"},
            )
            texts.append(result.stdout)
    return plain("\n".join(texts))


def _name_words(exam: SyntheticExam) -> set[str]:
    ids = exam.identifiers
    people = [ids.name, ids.responsible, ids.requester]
    people += [v for v in exam.extra_identifiers if re.fullmatch(r"[^\d@]+", v) and " " in v]
    return name_words(people)


def visible(text: str, values: list[str], names: set[str]) -> list[str]:
    """Which `values` (by index) show in OCR `text`: the digits of a number of 7+ digits, or a
    word of `names` (never the value itself)."""
    words = set(re.findall(r"[^\W\d_]+", text))
    numbers = [re.sub(r"\D", "", run) for run in re.findall(r"\d[\d .\-/()]*\d", text)]
    found = [f"name_word#{i}" for i, w in enumerate(sorted(names)) if w in words]
    for i, value in enumerate(values):
        digits = re.sub(r"\D", "", value)
        if len(digits) >= _NUMBER_MIN_DIGITS and any(digits in n for n in numbers):
            found.append(f"number#{i}")
    return found


def name_words(people: list[str]) -> set[str]:
    return {w for p in people for w in plain(p).split() if len(w) >= _NAME_WORD_MIN}


def ocr_leaks(pdf: bytes, exam: SyntheticExam, text: str | None = None) -> list[str]:
    """Planted values a reader of the rendered output would see (by index, never the value):
    a word of a person's name, or the digits of a planted number."""
    seen = text if text is not None else ocr_text(pdf)
    return visible(seen, planted_values(exam), _name_words(exam))
