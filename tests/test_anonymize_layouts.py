"""Layout profiles (files, validation, a site folder), the three label-value relations, unknown
layouts, the operator's preview, and runs that refuse to start on a broken environment."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pymupdf
import pytest
from PIL import Image, ImageStat

from medserve.anonymize.anonymizer import Anonymizer
from medserve.anonymize.errors import ExamRejected
from medserve.anonymize.layouts import BUILTIN_DIR, LayoutError, load_layouts, locate
from medserve.anonymize.preview import BURNT, HIT, KEPT, preview_png
from medserve.anonymize.records import QuarantineRecord
from medserve.anonymize.settings import AnonymizerSettings
from medserve.anonymize.synthetic import GEOMETRIES, LAYOUTS, generate_exam
from medserve.anonymize.textlines import read_rows

STANDARD = (BUILTIN_DIR / "standard.toml").read_text()


def test_shipped_profiles_match_the_generators_layouts() -> None:
    profiles = {p.name: p for p in load_layouts()}
    assert set(profiles) == set(LAYOUTS)
    for name, profile in profiles.items():
        geometry = GEOMETRIES[name]
        assert profile.page_two.size == pytest.approx(geometry.size, abs=0.01)
        assert profile.page_two.tracing_area == pytest.approx(geometry.tracing)
    relations = {f.relation for p in profiles.values() for f in p.page_one.fields}
    assert relations == {"same_line", "column_right", "line_below"}
    assert {p.page_two.landscape for p in profiles.values()} == {True, False}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_relation_finds_the_kept_values_and_nothing_else(layout: str) -> None:
    profiles = {p.name: p for p in load_layouts()}
    for seed in range(4):
        exam = generate_exam(seed, layout=layout, vectors=["birth_date_form"])  # type: ignore[arg-type]
        with pymupdf.open("pdf", exam.pdf) as document:
            page = document[0]
            zones = locate(profiles[layout], read_rows(page), page.rect)
        assert zones.missing == []
        values = {name: value.text for name, value in zones.fields.items()}
        assert values == {
            "exam_date": exam.kept.exam_date,
            "exam_time": exam.kept.exam_time,
            "sex": exam.kept.sex,
        }
        assert set(zones.regions) == (
            {"report"} | ({"measurements"} if layout != "standard" else set())
        )


def test_a_value_under_its_label_is_found_when_a_long_value_runs_into_it() -> None:
    """Stacked cells: a long address in the column to the left runs into the date under
    "Data do exame" (one text segment); the date is still found under its label."""
    stacked = next(p for p in load_layouts() if p.name == "stacked")
    merged = 0
    for seed in range(12):
        exam = generate_exam(seed, layout="stacked", vectors=["cns", "address"])
        with pymupdf.open("pdf", exam.pdf) as document:
            rows = read_rows(document[0])
            zones = locate(stacked, rows, document[0].rect)
        assert zones.fields["exam_date"].text == exam.kept.exam_date, seed
        label = zones.fields["exam_date"].label
        merged += any(
            exam.kept.exam_date in s.text and s.bbox.x0 < label.x0 - 20
            for row in rows
            for s in row.segments
        )
    assert merged  # the case occurs among these seeds


def _site(tmp_path: Path, text: str, name: str = "standard.toml") -> Path:
    folder = tmp_path / "layouts"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('relation = "same_line"', 'relation = "diagonal"'), "page_one.fields.0.relation"),
        (
            ("tracing_area = [20.0, 30.0, 822.0, 480.0]", "tracing_area = [822, 30, 20, 480]"),
            "page_two",
        ),
        (('markers = ["ECG de Repouso"]', "markers = []"), "markers"),
        (("[page_two]", 'colour = "red"\n[page_two]'), "colour"),
        (('name = "standard"', 'name = "Standard Layout"'), "name"),
        (("[[page_one.fields]]", "[[page_one.fields]]]"), "standard.toml"),
    ],
)
def test_a_bad_profile_is_refused_with_its_file_and_field(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    bad = STANDARD.replace(*change)
    assert bad != STANDARD
    with pytest.raises(LayoutError) as refused:
        load_layouts(_site(tmp_path, bad))
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_site_folder_adds_and_replaces_profiles(tmp_path: Path) -> None:
    extra = STANDARD.replace('name = "standard"', 'name = "clinic-b"').replace(
        'markers = ["ECG de Repouso"]', 'markers = ["ECG Clínica B"]'
    )
    folder = _site(tmp_path, extra, "clinic-b.toml")
    assert {p.name for p in load_layouts(folder)} == {*LAYOUTS, "clinic-b"}
    (folder / "standard.toml").write_text(STANDARD.replace("[20.0, 30.0,", "[25.0, 30.0,"))
    standard = next(p for p in load_layouts(folder) if p.name == "standard")
    assert standard.page_two.tracing_area[0] == 25.0
    with pytest.raises(LayoutError, match="does not exist"):
        load_layouts(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError, match=r"no \*\.toml"):
        load_layouts(tmp_path / "empty")


def test_no_matching_profile_or_a_missing_kept_part_is_unknown_layout(tmp_path: Path) -> None:
    exam = generate_exam(3, layout="table")
    only_standard = [p for p in load_layouts() if p.name == "standard"]
    anonymizer = Anonymizer(AnonymizerSettings(dpi=300), layouts=only_standard)
    result = anonymizer.process(exam.pdf, "x.pdf")
    assert isinstance(result, QuarantineRecord) and result.reason == "unknown_layout"
    # The standard profile asking for a kept field this exam does not have.
    strict = _site(tmp_path, STANDARD.replace('labels = ["Hora"]', 'labels = ["Horário"]'))
    result = Anonymizer(AnonymizerSettings(dpi=300, layouts_dir=strict)).process(
        generate_exam(3).pdf, "y.pdf"
    )
    assert isinstance(result, QuarantineRecord) and result.reason == "unknown_layout"
    assert "exam_time" in result.detail


def _pixels(image: Image.Image, colour: tuple[int, int, int], tolerance: int = 40) -> int:
    pixels = image.convert("RGB").get_flattened_data()
    return sum(1 for p in pixels if all(abs(p[k] - colour[k]) <= tolerance for k in range(3)))


def test_preview_draws_kept_zones_burnt_areas_and_hits(tmp_path: Path) -> None:
    exam = generate_exam(4, layout="stacked", vectors=["report_name", "phone"])
    png, profile = preview_png(exam.pdf, load_layouts(), dpi=50)
    assert profile.name == "stacked"
    picture = Image.open(io.BytesIO(png))
    page_one_width = round(595.28 * 50 / 72)
    assert picture.width > 2 * page_one_width
    left = picture.crop((0, 0, page_one_width, picture.height))
    assert _pixels(left, KEPT[:3], 30) > 200  # kept zone outlines
    assert _pixels(left, HIT[:3], 30) > 50  # the name in the report, phone, CPF...
    # The top strip (the header vectors' place) is burnt: tinted red; the report is not.
    burnt = ImageStat.Stat(left.crop((5, 2, page_one_width - 5, 14)).convert("RGB")).mean
    with pymupdf.open("pdf", exam.pdf) as document:
        report = locate(profile, read_rows(document[0]), document[0].rect).regions["report"]
    blank = (100, report.y1 - 20, 500, report.y1 - 5)  # below the last report line
    kept = ImageStat.Stat(left.crop(tuple(round(v * 50 / 72) for v in blank))).mean
    assert burnt[0] > burnt[1] + 30 and abs(kept[0] - kept[1]) < 5
    assert BURNT[0] > BURNT[1]
    # The CLI writes the same picture next to the exam.
    source = tmp_path / "exam.pdf"
    source.write_bytes(exam.pdf)
    done = subprocess.run(
        [sys.executable, "-m", "medserve.cli", "anonymize", "preview", str(source), "--dpi", "40"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "layout stacked" in done.stderr
    assert Image.open(tmp_path / "exam.preview.png").format == "PNG"
    with pytest.raises(ExamRejected, match="no layout named"):
        preview_png(exam.pdf, load_layouts(), layout="nonexistent")


def _cli(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medserve.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", **env},
    )


def test_a_broken_environment_refuses_to_start(tmp_path: Path) -> None:
    """Exit 2 and a one-line reason before any exam is read, instead of a quarantine per exam."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    (inputs / "exam.pdf").write_bytes(generate_exam(1).pdf)
    bad_layouts = _site(tmp_path, STANDARD.replace("[page_two]", "[page_too]"))
    for env, reason, args in (
        (
            {"MEDSERVE_ANON_OCR_LANGUAGE": "xx_missing"},
            "OCR unavailable",
            ["anonymize", str(inputs), str(out), "--engine", "processpool"],
        ),
        (
            {"MEDSERVE_ANON_LAYOUTS_DIR": str(bad_layouts)},
            "layout standard.toml",
            ["anonymize-file", str(inputs / "exam.pdf"), str(out / "one.zip")],
        ),
    ):
        refused = _cli(args, **env)
        assert refused.returncode == 2, refused.stderr
        lines = [line for line in refused.stderr.splitlines() if line.startswith("refused")]
        assert len(lines) == 1 and reason in lines[0], refused.stderr
        assert not out.exists()
