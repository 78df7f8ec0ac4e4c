"""Recall on a small corpus with every issue-18 vector in every layout: no planted identifier
left in any output (text, objects, bytes, and what OCR of the rendered pages reads), nothing
quarantined, every kept field kept. The 300-exam version is `bench/anonymize.py --corpus`."""

from __future__ import annotations

from pathlib import Path

import pymupdf
import pytest

from medserve.anonymize.anonymizer import AnonymizedExam, Anonymizer
from medserve.anonymize.settings import AnonymizerSettings
from medserve.anonymize.synthetic import LAYOUTS, VECTORS, generate_corpus
from tests.anonymize_checks import leaks, ocr_leaks, pdf_from_zip, plain


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> list:
    exams = generate_corpus(
        tmp_path_factory.mktemp("corpus"),
        count=2 * len(LAYOUTS),
        seed=18,
        hidden_fraction=0.5,
        layouts=LAYOUTS,
        vector_fraction=1.0,
    )
    anonymizer = Anonymizer(AnonymizerSettings(dpi=300))
    return [(exam, anonymizer.process(exam.pdf, f"exam-{i}.pdf")) for i, exam in enumerate(exams)]


def test_the_corpus_holds_every_vector_and_layout(outputs: list) -> None:
    assert {exam.layout for exam, _ in outputs} == set(LAYOUTS)
    assert len({v for exam, _ in outputs for v in exam.vectors}) >= len(VECTORS) - 2


def test_no_exam_of_a_known_layout_is_quarantined(outputs: list) -> None:
    held = [(r.reason, r.detail) for _, r in outputs if not isinstance(r, AnonymizedExam)]
    assert held == []


def test_no_planted_identifier_is_left_anywhere(outputs: list, tmp_path: Path) -> None:
    first = outputs[0][0]
    assert leaks(first.pdf, first) and ocr_leaks(first.pdf, first)  # the oracle sees the input
    for exam, result in outputs:
        pdf = pdf_from_zip(result.zip_bytes)
        assert leaks(pdf, exam) == [], exam.seed
        assert ocr_leaks(pdf, exam) == [], exam.seed


def test_kept_fields_are_all_kept(outputs: list) -> None:
    for exam, result in outputs:
        with pymupdf.open("pdf", pdf_from_zip(result.zip_bytes)) as document:
            text = plain(document[0].get_text())
        kept = exam.kept
        for value in (kept.exam_date, kept.exam_time, kept.sex, *kept.report_lines):
            assert plain(value) in text, (exam.seed, exam.layout)
        for value in kept.measurements:
            assert plain(value) in text
