"""An independent leak check for anonymised exams (deliberately not the anonymiser's own code).

It hunts the values the generator planted, in every form they could take in a PDF: extracted text
(no clipping, hidden text included), metadata, and the raw bytes of every object and decoded
stream, as UTF-8, Latin-1 and UTF-16BE.
"""

from __future__ import annotations

import io
import re
import unicodedata
import zipfile

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
