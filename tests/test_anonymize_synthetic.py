"""The synthetic ECG exam generator: determinism, layout contract and every hiding place."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pymupdf
import pytest

from medserve.anonymize.synthetic import (
    GEOMETRIES,
    HIDING_PLACES,
    LAYOUTS,
    PAGE_TWO_FOOTER,
    TITLE,
    VECTORS,
    HidingPlace,
    Layout,
    SyntheticExam,
    cpf_is_valid,
    generate_corpus,
    generate_exam,
    write_bad_inputs,
)

SEEDS = range(24)
LEAD_LABELS = {"I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"}
A4 = (595.28, 841.89)


@cache
def exam(seed: int, places: tuple[HidingPlace, ...] = ()) -> SyntheticExam:
    """Exams are reused across tests: generating is the slow part."""
    return generate_exam(seed, places)


def open_pdf(pdf: bytes) -> pymupdf.Document:
    return pymupdf.open("pdf", pdf)


def page_text(pdf: bytes, number: int = 0) -> str:
    return open_pdf(pdf)[number].get_text()


def test_same_seed_gives_the_same_exam_and_other_seeds_differ() -> None:
    first, again = (
        generate_exam(3, ["metadata", "old_revision"]),
        exam(3, ("metadata", "old_revision")),
    )
    assert first.pdf == again.pdf
    assert first.identifiers == again.identifiers and first.kept == again.kept
    assert exam(4).identifiers != first.identifiers
    # Hiding places never change the exam itself.
    assert exam(3).identifiers.name == first.identifiers.name
    assert exam(3).kept == first.kept


def test_two_pages_a4_portrait_then_landscape_with_title() -> None:
    for seed in SEEDS:
        doc = open_pdf(exam(seed).pdf)
        assert doc.page_count == 2
        assert tuple(doc[0].rect)[2:] == pytest.approx(A4, abs=0.01)
        assert tuple(doc[1].rect)[2:] == pytest.approx(A4[::-1], abs=0.01)
        assert TITLE in doc[0].get_text()
        assert 60_000 < len(exam(seed).pdf) < 400_000


def test_identifiers_are_planted_on_page_one_with_labels() -> None:
    for seed in SEEDS:
        generated = exam(seed)
        text = page_text(generated.pdf)
        ids, kept = generated.identifiers, generated.kept
        for value in (ids.name, ids.cpf, ids.rg, ids.birth_date, ids.insurer, ids.crm):
            assert value in text, f"seed {seed}"
        assert ids.responsible in text and ids.requester in text
        assert kept.exam_date in text and kept.exam_time in text
        assert re.search(rf"(?i)sexo: {kept.sex}\b", text)
        assert re.search(r"(?i)\bnome: ", text) and re.search(r"(?i)conv[eê]nio: ", text)
        assert re.search(r"(?i)respons[aá]vel: dr", text)
        assert "Laudo:" in text and "CONCLUSÃO:" in text
        for line in kept.report_lines:
            assert line in text


def test_identifier_formats_and_variety() -> None:
    exams = [exam(seed) for seed in SEEDS]
    for generated in exams:
        ids, kept = generated.identifiers, generated.kept
        assert cpf_is_valid(ids.cpf)
        assert re.fullmatch(r"\d{3}\.\d{3}\.\d{3}-\d{2}|\d{11}", ids.cpf)
        assert re.fullmatch(r"\d{2}\.\d{3}\.\d{3}-[\dX]", ids.rg)
        assert re.fullmatch(r"\d{4,6}/[A-Z]{2}|CRM-[A-Z]{2} \d{4,6}", ids.crm)
        assert re.fullmatch(r"\d{6,8}", ids.exam_number)
        assert 1930 <= int(ids.birth_date[-4:]) <= 2005 and ids.birth_date != kept.exam_date
        assert len({ids.name, ids.responsible, ids.requester}) == 3
        # Kept text (report included) never contains an identifier: what survives must be clean.
        for kept_text in (kept.exam_date, kept.exam_time, *kept.report_lines):
            assert not any(value in kept_text for value in ids.values())
    assert {len(e.identifiers.cpf) for e in exams} == {11, 14}
    assert any(e.identifiers.name.isupper() for e in exams)
    assert any(re.search(r"[ÁÂÃÉÊÍÓÔÕÚÇáâãéêíóôõúç]", e.identifiers.name) for e in exams)
    assert any(re.search(r" (da|de|do|dos|das) ", e.identifiers.name.lower()) for e in exams)
    assert any(e.report_signature_line for e in exams)
    assert len({e.identifiers.insurer for e in exams}) > 4


def test_signed_report_line_names_the_physician_and_is_listed() -> None:
    signed = [exam(seed) for seed in range(60) if exam(seed).report_signature_line]
    assert signed
    for generated in signed:
        line = generated.report_signature_line or ""
        assert generated.identifiers.responsible in line
        assert line in page_text(generated.pdf)
        assert generated.identifiers.extra[-1] in line  # its CRM rendering is a planted value


@pytest.mark.parametrize("layout", LAYOUTS)
def test_page_two_identifiers_only_in_signature_stamp_and_header(layout: Layout) -> None:
    geometry = GEOMETRIES[layout]
    allowed = pymupdf.Rect(geometry.signature), pymupdf.Rect(geometry.stamp)
    tracing = pymupdf.Rect(geometry.tracing)
    for seed in range(6):
        generated = generate_exam(seed, layout=layout, vectors=["page_two_header"])
        page = open_pdf(generated.pdf)[1]
        assert tuple(page.rect)[2:] == pytest.approx(geometry.size, abs=0.01)
        texts: list[str] = []
        for block in page.get_text("dict")["blocks"]:
            for line in block.get("lines", ()):
                for span in line["spans"]:
                    bbox = pymupdf.Rect(span["bbox"])
                    if any(region.contains(bbox) for region in allowed):
                        texts.append(span["text"])
                    elif tracing.contains(bbox):
                        assert span["text"] in LEAD_LABELS | {PAGE_TWO_FOOTER}, span["text"]
                    else:  # the header above the tracing
                        assert bbox.y1 < tracing.y0 and generated.identifiers.name in span["text"]
        inside = " ".join(texts)
        number = re.sub(r"\D", "", generated.identifiers.crm)
        assert generated.identifiers.responsible in inside
        assert re.search(rf"CRM-[A-Z]{{2}} {number}", inside)
        # Every drawing outside the tracing (signature, its line, the stamp box) is inside too.
        for drawing in page.get_cdrawings():
            rect = pymupdf.Rect(drawing["rect"])
            if not (tracing + pymupdf.Rect(-1, -1, 1, 1)).contains(rect):
                assert any(region.contains(rect) for region in allowed), rect


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_vector_is_planted_and_the_layout_holds_its_kept_fields(layout: Layout) -> None:
    generated = generate_exam(21, layout=layout, vectors=list(VECTORS))
    assert generated.layout == layout and generated.vectors == list(VECTORS)
    document = open_pdf(generated.pdf)
    page = document[0]  # one Page object: an OCR text page is bound to it
    text = page.get_text()
    kept = generated.kept
    for value in (kept.exam_date, kept.exam_time, *kept.report_lines, *kept.measurements):
        assert value in text
    assert bool(kept.measurements) == (layout != "standard")
    values = generated.vector_values
    assert set(values) == set(VECTORS)
    for vector in ("cns", "phone", "email", "record_number", "birth_date_form", "cpf_spaced"):
        assert all(value in text for value in values[vector]), vector
    assert all(value in text for value in values["report_name"])
    # The lying font: the page shows "Paciente: <name>", extraction reads every letter shifted.
    shifted = "".join(chr(ord(c) + 1) for c in "Paciente")
    assert shifted in text
    # Outlines and the image carry no extractable text, but the page shows them: OCR reads them.
    header = pymupdf.Rect(0, 0, page.rect.width, 30)
    assert page.get_text(clip=header).strip() == ""
    assert page.get_images() and any(
        header.contains(pymupdf.Rect(d["rect"])) for d in page.get_cdrawings()
    )
    ocr = page.get_textpage_ocr(language="por", dpi=200, full=True, flags=0)
    seen = re.sub(r"\D", "", page.get_text(textpage=ocr, clip=header))
    assert re.sub(r"\D", "", generated.identifiers.cpf) in seen
    assert all(value in generated.extra_identifiers for v in values.values() for value in v)


def _catalog_string(doc: pymupdf.Document, xref: int, key: str) -> str:
    kind, value = doc.xref_get_key(xref, key)
    assert kind == "string", (key, kind)
    return value


def _check_metadata(doc: pymupdf.Document, name: str, cpf: str) -> None:
    meta = doc.metadata or {}
    assert name in meta["title"] and name in meta["subject"] and cpf in meta["keywords"]


def _check_xmp(doc: pymupdf.Document, name: str, cpf: str) -> None:
    assert name in doc.get_xml_metadata()


def _check_annotation(doc: pymupdf.Document, name: str, cpf: str) -> None:
    page = doc[0]  # an Annot is only usable while its Page object lives
    notes = [a for a in page.annots() if a.type[1] in ("Text", "FreeText")]
    assert any(name in a.info["content"] for a in notes)


def _check_file_attachment(doc: pymupdf.Document, name: str, cpf: str) -> None:
    page = doc[0]  # an Annot is only usable while its Page object lives
    files = [a for a in page.annots() if a.type[1] == "FileAttachment"]
    assert files and name.encode() in files[0].get_file()
    # Annot.file_info mangles non-ASCII file names; read the file spec's /UF directly.
    assert name in _catalog_string(doc, files[0].xref, "FS/UF")


def _check_form_field(doc: pymupdf.Document, name: str, cpf: str) -> None:
    page = doc[0]
    assert [w.field_value for w in page.widgets()] == [name]


def _check_embedded_file(doc: pymupdf.Document, name: str, cpf: str) -> None:
    assert doc.embfile_count() == 1
    content = doc.embfile_get(0).decode()
    assert name in content and cpf in content


def _check_javascript(doc: pymupdf.Document, name: str, cpf: str) -> None:
    catalog = doc.pdf_catalog()
    kind, names = doc.xref_get_key(catalog, "Names/JavaScript/Names")
    assert kind == "array"
    script = re.search(r"(\d+) 0 R", names)
    assert script is not None
    assert name in _catalog_string(doc, int(script.group(1)), "JS")
    kind, action = doc.xref_get_key(catalog, "OpenAction")
    assert kind == "xref"
    assert name in _catalog_string(doc, int(action.split()[0]), "JS")


def _check_outline(doc: pymupdf.Document, name: str, cpf: str) -> None:
    assert any(name in title for _, title, _ in doc.get_toc())


def _check_page_label(doc: pymupdf.Document, name: str, cpf: str) -> None:
    # Page.get_label() returns octal escapes for non-ASCII: compare the PDF string form.
    kind, labels = doc.xref_get_key(doc.pdf_catalog(), "PageLabels")
    assert kind == "dict" and pymupdf.get_pdf_str(name)[1:-1] in labels


def _check_hidden_layer(doc: pymupdf.Document, name: str, cpf: str) -> None:
    assert [ocg["on"] for ocg in doc.get_ocgs().values()] == [False]
    assert f"CPF {cpf}" not in doc[0].get_text()  # MuPDF skips content of OFF layers
    doc.set_layer_ui_config(0, pymupdf.PDF_OC_ON)
    assert f"{name} CPF {cpf}" in doc[0].get_text()


def _check_outside_crop_box(doc: pymupdf.Document, name: str, cpf: str) -> None:
    page = doc[0]
    assert page.mediabox.width * page.mediabox.height > page.cropbox.width * page.cropbox.height
    assert tuple(page.rect)[2:] == pytest.approx(A4, abs=0.01)
    flags = pymupdf.TEXTFLAGS_DICT & ~pymupdf.TEXT_MEDIABOX_CLIP
    lines = [
        (pymupdf.Rect(line["bbox"]), "".join(span["text"] for span in line["spans"]))
        for block in page.get_text("dict", flags=flags, clip=pymupdf.INFINITE_RECT())["blocks"]
        for line in block.get("lines", ())
    ]
    assert any(name in text and not page.rect.contains(bbox) for bbox, text in lines)


def _trace_spans(doc: pymupdf.Document, name: str) -> list[dict]:
    spans = doc[0].get_texttrace()
    return [s for s in spans if name in "".join(chr(c[0]) for c in s["chars"])]


def _check_invisible_text(doc: pymupdf.Document, name: str, cpf: str) -> None:
    assert any(span["type"] == 3 for span in _trace_spans(doc, name))


def _check_white_text(doc: pymupdf.Document, name: str, cpf: str) -> None:
    assert any(tuple(span["color"]) == (1.0, 1.0, 1.0) for span in _trace_spans(doc, name))


def _check_thumbnail(doc: pymupdf.Document, name: str, cpf: str) -> None:
    kind, value = doc.xref_get_key(doc[0].xref, "Thumb")
    assert kind == "xref"
    thumb = pymupdf.Pixmap(doc, int(value.split()[0]))
    assert thumb.width > 100 and thumb.height > 100
    assert min(thumb.samples) < 64 < 250 < max(thumb.samples)  # dark text on white


CHECKS: dict[str, Callable[[pymupdf.Document, str, str], None]] = {
    "metadata": _check_metadata,
    "xmp": _check_xmp,
    "annotation": _check_annotation,
    "file_attachment": _check_file_attachment,
    "form_field": _check_form_field,
    "embedded_file": _check_embedded_file,
    "javascript": _check_javascript,
    "outline": _check_outline,
    "page_label": _check_page_label,
    "hidden_layer": _check_hidden_layer,
    "outside_crop_box": _check_outside_crop_box,
    "invisible_text": _check_invisible_text,
    "white_text": _check_white_text,
    "thumbnail": _check_thumbnail,
}


@pytest.mark.parametrize("place", [p for p in HIDING_PLACES if p != "old_revision"])
def test_each_hiding_place_holds_the_name(place: HidingPlace) -> None:
    plain = open_pdf(exam(5).pdf)
    with pytest.raises(AssertionError):
        CHECKS[place](plain, exam(5).identifiers.name, exam(5).identifiers.cpf)
    for seed in (5, 6):  # two seeds: the outside-crop-box strip is above or to the right
        generated = exam(seed, (place,))
        assert generated.hiding_places == [place]
        CHECKS[place](
            open_pdf(generated.pdf), generated.identifiers.name, generated.identifiers.cpf
        )


def test_old_revision_keeps_an_earlier_name_before_the_first_eof() -> None:
    generated = exam(9, ("old_revision",))
    old = generated.extra_identifiers[0]
    assert old in generated.identifiers.values() and old != generated.identifiers.name
    assert generated.pdf.count(b"%%EOF") == 2
    first_revision = generated.pdf[: generated.pdf.index(b"%%EOF") + 5]
    earlier, final = page_text(first_revision), page_text(generated.pdf)
    assert old in earlier and generated.identifiers.name not in earlier
    assert generated.identifiers.name in final and old not in final
    # Same layout: the name is still on its "Nome:" line.
    assert re.search(rf"(?i)nome: {re.escape(generated.identifiers.name)}", final)


def test_all_hiding_places_at_once() -> None:
    generated = exam(13, HIDING_PLACES)
    assert generated.hiding_places == list(HIDING_PLACES)
    ids = generated.identifiers
    for check in CHECKS.values():
        check(open_pdf(generated.pdf), ids.name, ids.cpf)
    assert generated.pdf.count(b"%%EOF") == 2


def test_unknown_hiding_place_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown hiding places"):
        generate_exam(1, ["under_the_rug"])  # type: ignore[list-item]


def test_corpus_files_in_order_with_neutral_names(tmp_path: Path) -> None:
    exams = generate_corpus(tmp_path, 6, seed=2, hidden_fraction=1.0)
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == [f"exam-{i:05d}.pdf" for i in range(6)]
    for file, generated in zip(files, exams, strict=True):
        assert file.read_bytes() == generated.pdf
        assert 1 <= len(generated.hiding_places) <= 3
    assert not any(e.hiding_places for e in generate_corpus(tmp_path / "b", 3, hidden_fraction=0))
    assert [e.pdf for e in generate_corpus(tmp_path / "c", 6, seed=2)] != [e.pdf for e in exams]


def test_bad_inputs_fail_the_way_their_reason_says(tmp_path: Path) -> None:
    reasons = write_bad_inputs(tmp_path)
    assert sorted(set(reasons.values())) == sorted(
        ["empty", "not_pdf", "corrupt", "encrypted", "wrong_page_count", "unknown_layout"]
    )
    assert {f.name for f in tmp_path.iterdir()} == set(reasons)
    for name, reason in reasons.items():
        data = (tmp_path / name).read_bytes()
        if reason == "empty":
            assert data == b""
        elif reason == "not_pdf":
            assert data and not data.startswith(b"%PDF-")
        elif reason == "corrupt":
            assert data.startswith(b"%PDF-")
            with pytest.raises(pymupdf.FileDataError):
                open_pdf(data)
        elif reason == "encrypted":
            assert open_pdf(data).needs_pass
        elif reason == "wrong_page_count":
            assert open_pdf(data).page_count in (1, 3)
        else:
            doc = open_pdf(data)
            text = doc[0].get_text()
            assert doc.page_count == 2 and TITLE not in text and "Nome:" not in text
