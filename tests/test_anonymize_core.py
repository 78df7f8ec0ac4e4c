"""The anonymiser library on its own (no Ray, no S3): privacy, fidelity, records, bad inputs."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pymupdf
import pytest
from PIL import Image

from medserve.anonymize import layouts
from medserve.anonymize.anonymizer import AnonymizedExam, Anonymizer
from medserve.anonymize.records import QuarantineRecord, key_digest
from medserve.anonymize.settings import AnonymizerSettings
from medserve.anonymize.synthetic import (
    GEOMETRIES,
    HIDING_PLACES,
    generate_exam,
    write_bad_inputs,
)
from tests.anonymize_checks import leaks, pdf_from_zip, plain

# 300 DPI keeps the suite fast; the default 450 DPI path is covered by `test_default_settings...`.
FAST = AnonymizerSettings(dpi=300)


@pytest.fixture(scope="module")
def anonymizer() -> Anonymizer:
    return Anonymizer(FAST)


def _anonymise(anonymizer: Anonymizer, pdf: bytes, key: str = "exam.pdf") -> AnonymizedExam:
    result = anonymizer.process(pdf, key)
    assert isinstance(result, AnonymizedExam), f"quarantined: {result.reason} {result.detail}"
    return result


@pytest.mark.parametrize("place", [None, *HIDING_PLACES])
def test_no_planted_identifier_survives_any_hiding_place(anonymizer: Anonymizer, place) -> None:
    exam = generate_exam(
        seed=100 + (HIDING_PLACES.index(place) if place else 99),
        hiding_places=[place] if place else [],
    )
    # The oracle must see the planted values in the input, or "no leak" would prove nothing.
    assert leaks(exam.pdf, exam), "the generator planted nothing the checker can find"
    result = _anonymise(anonymizer, exam.pdf)
    assert leaks(pdf_from_zip(result.zip_bytes), exam) == []


def test_kept_fields_and_report_survive(anonymizer: Anonymizer) -> None:
    exam = generate_exam(seed=7)
    pdf = pdf_from_zip(_anonymise(anonymizer, exam.pdf).zip_bytes)
    with pymupdf.open("pdf", pdf) as document:
        text = plain(document[0].get_text())
    kept = exam.kept
    for value in (kept.exam_date, kept.exam_time, *kept.report_lines):
        assert plain(value) in text
    assert re.search(r"sexo\s*:\s*" + plain(kept.sex), text)
    assert "ecg de repouso" in text
    # Keep-only: the exam number (an accession number) and the clinic are not kept.
    assert "exame:" not in text and exam.identifiers.exam_number not in text


def test_page_two_is_one_image_black_outside_the_tracing_area(anonymizer: Anonymizer) -> None:
    exam = generate_exam(seed=8, vectors=["page_two_header"])
    pdf = pdf_from_zip(_anonymise(anonymizer, exam.pdf).zip_bytes)
    with pymupdf.open("pdf", pdf) as document:
        page = document[1]
        assert page.get_text().strip() == ""
        assert page.get_fonts() == []
        (image,) = page.get_images(full=True)
        extracted = document.extract_image(image[0])
        assert extracted["ext"] == "jpeg"
        assert extracted["width"] == round(page.rect.width * 300 / 72)
        picture = Image.open(io.BytesIO(extracted["image"])).convert("L")
    scale = 300 / 72
    geometry = GEOMETRIES["standard"]
    x0, y0, x1, y1 = (v * scale for v in geometry.tracing)
    # Header (with the patient's name), signature and stamp: everything outside is black.
    for box in (
        (0, 0, picture.width, int(y0) - 2),
        (0, int(y1) + 2, picture.width, picture.height),
        (0, 0, int(x0) - 2, picture.height),
        (int(x1) + 2, 0, picture.width, picture.height),
    ):
        assert max(picture.crop(box).get_flattened_data()) < 40, box
    # The tracing itself is still there: the grid and traces are not blank.
    tracing = picture.crop((int(x0) + 10, int(y0) + 10, int(x1) - 10, int(y1) - 10))
    assert min(tracing.get_flattened_data()) < 100 and max(tracing.get_flattened_data()) > 200


def test_record_describes_the_output_without_the_key(anonymizer: Anonymizer) -> None:
    exam = generate_exam(seed=9)
    key = "2024/Maria da Silva/ecg.pdf"
    result = _anonymise(anonymizer, exam.pdf, key)
    record = result.record
    assert record.input_key_sha256 == key_digest(key)
    assert "Maria" not in record.model_dump_json()
    assert record.original_size_bytes == len(exam.pdf)
    assert record.output_size_bytes == len(result.zip_bytes)
    assert record.pdf_size_bytes == len(pdf_from_zip(result.zip_bytes))
    assert record.compression_ratio == pytest.approx(
        record.pdf_size_bytes / len(result.zip_bytes), rel=1e-3
    )
    assert (record.dpi, record.page_count, record.jpeg_quality) == (300, 2, 95)
    assert record.verification.passed and "ocr" in record.verification.checks
    assert record.ocr_verified and record.layout == record.verification.layout == "standard"
    assert record.seconds.render > 0 and record.seconds.verify > 0
    with zipfile.ZipFile(io.BytesIO(result.zip_bytes)) as zipped:
        info = zipped.infolist()[0]
        assert info.compress_type == zipfile.ZIP_DEFLATED and info.filename == f"{record.ulid}.pdf"


def test_output_zip_passes_unzip(tmp_path: Path, anonymizer: Anonymizer) -> None:
    exam = generate_exam(seed=10)
    archive = tmp_path / "out.zip"
    archive.write_bytes(_anonymise(anonymizer, exam.pdf).zip_bytes)
    check = subprocess.run(
        [sys.executable, "-m", "zipfile", "-t", str(archive)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


def test_bad_inputs_are_quarantined_with_their_reason(
    tmp_path: Path, anonymizer: Anonymizer
) -> None:
    expected = write_bad_inputs(tmp_path)
    assert len(set(expected.values())) >= 6
    for name, reason in expected.items():
        result = anonymizer.process((tmp_path / name).read_bytes(), name)
        assert isinstance(result, QuarantineRecord), name
        assert result.reason == reason, (name, result.detail)


def test_oversized_input_is_refused_before_parsing() -> None:
    exam = generate_exam(seed=11)
    small = Anonymizer(AnonymizerSettings(dpi=300, max_input_bytes=len(exam.pdf) - 1))
    result = small.process(exam.pdf, "big.pdf")
    assert isinstance(result, QuarantineRecord) and result.reason == "too_large"


def test_a_profile_that_keeps_the_stamp_fails_verification(tmp_path: Path) -> None:
    """Fail closed: a site profile whose tracing area takes in the CRM stamp lets the stamp into
    the output; the verifier's OCR of page 2 reads the CRM there and the exam is held."""
    standard = (Path(layouts.__file__).parent / "layouts" / "standard.toml").read_text()
    wide = standard.replace(
        "tracing_area = [20.0, 30.0, 822.0, 480.0]", "tracing_area = [20.0, 30.0, 835.0, 590.0]"
    )
    assert wide != standard
    (tmp_path / "standard.toml").write_text(wide)
    settings = AnonymizerSettings(dpi=300, layouts_dir=tmp_path)
    result = Anonymizer(settings).process(generate_exam(seed=12).pdf, "x.pdf")
    assert isinstance(result, QuarantineRecord)
    assert result.reason == "verification_failed" and "ocr_identifier:page2" in result.detail


def test_broken_ocr_in_a_worker_fails_closed() -> None:
    """No language data in a worker (the run's own check passed elsewhere): the positive control
    fails there, so nothing passes verification."""
    result = Anonymizer(AnonymizerSettings(dpi=300, ocr_language="xx_missing")).process(
        generate_exam(seed=13).pdf, "x.pdf"
    )
    assert isinstance(result, QuarantineRecord) and "ocr_unavailable" in result.detail


def test_default_settings_are_the_sources_and_leak_nothing() -> None:
    settings = AnonymizerSettings()
    assert (
        settings.dpi,
        settings.colour_mode,
        settings.jpeg_quality,
        settings.anti_aliasing,
        settings.zip_level,
    ) == (450, "rgb", 95, 8, 5)
    exam = generate_exam(seed=14, hiding_places=list(HIDING_PLACES))
    result = _anonymise(Anonymizer(settings), exam.pdf)
    assert result.record.dpi == 450
    assert leaks(pdf_from_zip(result.zip_bytes), exam) == []


def test_settings_refuse_dpi_outside_300_to_600() -> None:
    for dpi in (299, 601):
        with pytest.raises(ValueError):
            AnonymizerSettings(dpi=dpi)


def test_owner_password_only_exam_is_anonymised(anonymizer: Anonymizer) -> None:
    """Print/copy restrictions without a user password: readable, so anonymised, not refused."""
    exam = generate_exam(seed=15)
    with pymupdf.open("pdf", exam.pdf) as document:
        restricted = document.tobytes(
            encryption=pymupdf.PDF_ENCRYPT_AES_256,
            owner_pw="owner-only",
            permissions=pymupdf.PDF_PERM_PRINT,
        )
    result = _anonymise(anonymizer, restricted)
    assert leaks(pdf_from_zip(result.zip_bytes), exam) == []


def test_media_box_below_zero_with_text_off_the_page(anonymizer: Anonymizer) -> None:
    """Real files have media boxes starting below zero; text hidden there is still removed."""
    exam = generate_exam(seed=16, hiding_places=["outside_crop_box"])
    with pymupdf.open("pdf", exam.pdf) as document:
        xref = document[0].xref
        x0, _, x1, y1 = document.xref_get_key(xref, "MediaBox")[1].strip("[]").split()
        document.xref_set_key(xref, "MediaBox", f"[{x0} -120 {x1} {y1}]")
        document[0].insert_text((50, 900), exam.identifiers.name, fontsize=8)
        shifted = document.tobytes()
    assert leaks(shifted, exam)
    result = _anonymise(anonymizer, shifted)
    assert leaks(pdf_from_zip(result.zip_bytes), exam) == []
