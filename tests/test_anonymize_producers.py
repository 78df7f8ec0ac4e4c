"""Real PDFs from other producers (reportlab, fpdf2, matplotlib) with embedded subset TrueType,
Type1 and Type3 fonts and an incremental update: anonymised, verified, nothing left, kept text
kept. Before issue 18, every exam with an embedded font program crashed verification."""

from __future__ import annotations

from collections.abc import Callable

import pymupdf
import pytest

from medserve.anonymize.anonymizer import AnonymizedExam, Anonymizer
from medserve.anonymize.settings import AnonymizerSettings
from medserve.anonymize.verify import stream_strings
from tests.anonymize_checks import (
    name_words,
    ocr_text,
    pdf_from_zip,
    plain,
    searchable_forms,
    visible,
)
from tests.anonymize_producers import (
    ProducedExam,
    fpdf2_exam,
    incremental_update,
    matplotlib_exam,
    reportlab_exam,
)


def _updated() -> ProducedExam:
    return incremental_update(reportlab_exam(), "Otávio Peixoto")


PRODUCERS: dict[str, tuple[Callable[[], ProducedExam], str, set[str]]] = {
    # name: (exam, layout it must match, font types page 1 must embed)
    "reportlab": (reportlab_exam, "standard", {"TrueType", "Type1"}),
    "fpdf2": (fpdf2_exam, "table", {"Type0"}),
    "matplotlib": (matplotlib_exam, "stacked", {"Type3"}),
    "incremental": (_updated, "standard", {"TrueType"}),
}


@pytest.fixture(scope="module")
def anonymizer() -> Anonymizer:
    return Anonymizer(AnonymizerSettings(dpi=300))


def _embedded_types(pdf: bytes) -> set[str]:
    with pymupdf.open("pdf", pdf) as document:
        return {
            font[2] for font in document[0].get_fonts() if font[1] != "n/a" or font[2] == "Type3"
        }


@pytest.mark.parametrize("producer", PRODUCERS)
def test_other_producers_exams_are_anonymised_and_verified(
    anonymizer: Anonymizer, producer: str
) -> None:
    make, layout, font_types = PRODUCERS[producer]
    exam = make()
    assert font_types <= _embedded_types(exam.pdf)  # the fixture is what it claims to be
    # Every identifier is in the file: in its last revision or (an updated name) its first.
    first_revision = exam.pdf[: exam.pdf.index(b"%%EOF") + 5]
    source_text = "".join(plain(searchable_forms(pymupdf.open("pdf", revision)))
                          for revision in (exam.pdf, first_revision))  # fmt: skip
    assert all(plain(value) in source_text for value in exam.identifiers)

    result = anonymizer.process(exam.pdf, f"{producer}.pdf")
    assert isinstance(result, AnonymizedExam), (result.reason, result.detail)
    assert result.record.layout == layout and result.record.verification.passed
    assert result.record.identifiers_removed >= 1  # the name in the report line
    pdf = pdf_from_zip(result.zip_bytes)
    with pymupdf.open("pdf", pdf) as document:
        kept_text = plain(document[0].get_text())
        left = plain(searchable_forms(document))
    for value in exam.kept:
        assert plain(value) in kept_text, value
    assert [i for i, value in enumerate(exam.identifiers) if plain(value) in left] == []
    people = [v for v in exam.identifiers if not any(c.isdigit() or c == "@" for c in v)]
    assert visible(ocr_text(pdf), exam.identifiers, name_words(people)) == []


def test_type3_report_text_survives_where_it_is_kept(anonymizer: Anonymizer) -> None:
    """Type3 glyphs are text like any other: kept where the profile keeps them (the report),
    removed elsewhere by position; not deleted as "invisible"."""
    exam = matplotlib_exam()
    result = anonymizer.process(exam.pdf, "type3.pdf")
    assert isinstance(result, AnonymizedExam)
    with pymupdf.open("pdf", pdf_from_zip(result.zip_bytes)) as document:
        page = document[0]
        assert {font[2] for font in page.get_fonts()} == {"Type3"}
        text = plain(page.get_text())
        ocr = plain(page.get_text(textpage=page.get_textpage_ocr(language="por", dpi=150)))
    for line in exam.report:
        assert plain(line) in text
    assert "ritmo sinusal regular" in ocr  # drawn, not only extractable
    assert "em uso de amiodarona" in text and "quintella" not in text


def test_pdf_strings_are_decoded_by_mupdf_odd_hex_and_escapes_included() -> None:
    """The old verifier padded an odd hex run with ljust(2) and crashed on font programs."""
    data = b"BT (Jo\\343o \\(x\\)) Tj <4a6f73e> Tj [(A) 120 <42>] TJ <FEFF004A00E3006F> Tj ET"
    assert list(stream_strings(data)) == ["Jo\xe3o (x)", "Jos\xe0", "A", "B", "J\xe3o"]
    assert list(stream_strings(b"\x00\xff<<>> garbage (unterminated")) is not None
