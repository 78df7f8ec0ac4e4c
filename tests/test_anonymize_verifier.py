"""The verifier does not trust the redactor: it finds what a crippled redactor left, judges an
unredacted file on its own, reads with OCR what no text layer shows, and samples OCR stably."""

from __future__ import annotations

import pymupdf
import pytest

from medserve.anonymize.anonymizer import AnonymizedExam, Anonymizer, ocr_chosen
from medserve.anonymize.layouts import load_layouts
from medserve.anonymize.recognisers import Recognisers
from medserve.anonymize.records import QuarantineRecord
from medserve.anonymize.settings import AnonymizerSettings
from medserve.anonymize.synthetic import SyntheticExam, generate_exam
from medserve.anonymize.verify import Verifier

FAST = AnonymizerSettings(dpi=300)


def _exam_needing(kind: str) -> SyntheticExam:
    """An exam whose report line (kept text) holds an identifier only `kind` finds."""
    for seed in range(100):
        exam = generate_exam(seed, vectors=["report_name"])
        values = exam.vector_values["report_name"]  # [name] or [name, birth date or phone]
        if kind == "name" or (len(values) == 2 and Recognisers().kinds_in(values[1]) == [kind]):
            return exam
    raise AssertionError(f"no exam with a {kind} in its report")


@pytest.mark.parametrize("disabled", ["name", "date", "phone"])
def test_a_recogniser_missing_from_the_redactor_is_caught_by_the_verifier(disabled: str) -> None:
    exam = _exam_needing(disabled)
    full = Anonymizer(FAST).process(exam.pdf, "k.pdf")
    assert isinstance(full, AnonymizedExam), (full.reason, full.detail)
    crippled = Anonymizer(FAST, redactor_recognisers=Recognisers(frozenset({disabled})))
    result = crippled.process(exam.pdf, "k.pdf")
    assert isinstance(result, QuarantineRecord) and result.reason == "verification_failed"
    assert f"identifier_in_text:page1:{disabled}" in result.detail


def test_an_unredacted_exam_fails_on_its_own_content() -> None:
    """Not circular: with nothing reported by any redactor, the source file itself fails."""
    exam = generate_exam(5, vectors=["email", "phone"])
    verification = Verifier(FAST, load_layouts()).verify(exam.pdf, ocr=False)
    assert not verification.passed
    for kind in ("cpf", "rg", "name", "crm", "date", "email", "phone"):
        assert f"identifier_in_text:page1:{kind}" in verification.failures, kind
    assert "page_two_has_text" in verification.failures


def _with_image_in_the_report(pdf: bytes) -> bytes:
    """The exam with a picture of a CPF inside the report region, where keep-only keeps
    images: no text layer shows it, only OCR can."""
    with pymupdf.open() as scratch:
        sheet = scratch.new_page(width=220, height=16)
        sheet.insert_text((2, 12), "CPF 529.982.247-25", fontsize=10)
        pixmap = sheet.get_pixmap(dpi=200)
    with pymupdf.open("pdf", pdf) as document:
        document[0].insert_image(pymupdf.Rect(300, 700, 520, 716), pixmap=pixmap)
        return document.tobytes()


def test_ocr_reads_what_no_text_layer_shows_and_sampling_skips_it() -> None:
    pdf = _with_image_in_the_report(generate_exam(9).pdf)
    result = Anonymizer(FAST).process(pdf, "k.pdf")
    assert isinstance(result, QuarantineRecord)
    assert "ocr_identifier:page1:cpf" in result.detail
    # The same exam when the sample skips its OCR: that is what sampling trades away.
    unsampled = Anonymizer(AnonymizerSettings(dpi=300, ocr_sample=0.0)).process(pdf, "k.pdf")
    assert isinstance(unsampled, AnonymizedExam) and not unsampled.record.ocr_verified


def test_ocr_sampling_is_stable_and_near_its_rate() -> None:
    keys = [f"2024/exam-{i}.pdf" for i in range(2000)]
    assert not any(ocr_chosen(k, 0.0) for k in keys) and all(ocr_chosen(k, 1.0) for k in keys)
    chosen = [k for k in keys if ocr_chosen(k, 0.1)]
    assert 150 < len(chosen) < 250
    assert chosen == [k for k in keys if ocr_chosen(k, 0.1)]  # a re-run OCRs the same exams
    assert set(chosen) <= {k for k in keys if ocr_chosen(k, 0.5)}
