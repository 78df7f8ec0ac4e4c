"""Anonymiser and pipeline settings (`MEDSERVE_ANON_*`).

Defaults are the source system's settings (450 DPI, RGB, JPEG quality 95, full anti-aliasing, ZIP
Deflate level 5) and the page-2 regions of the standard exam layout.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# x0, y0, x1, y1 in PDF points, origin top-left (PyMuPDF's page coordinates).
Region = tuple[float, float, float, float]

IDENTIFYING_LABELS: tuple[str, ...] = (
    "Nome",
    "CPF",
    "RG",
    "Data de Nascimento",
    "Nascimento",
    "Convênio",
    "Responsável",
    "Solicitante",
    "CRM",
)
NAME_LABELS: tuple[str, ...] = ("Nome", "Responsável", "Solicitante")
# Labels whose values stay; they also end an identifying value that shares their line.
KEPT_LABELS: tuple[str, ...] = ("Sexo", "Exame", "Data", "Hora", "Laudo", "Conclusão")
# Text that tells the exam layout apart from any other two-page PDF.
LAYOUT_MARKERS: tuple[str, ...] = ("ECG de Repouso",)

ColourMode = Literal["rgb", "gray"]
JpegSubsampling = Literal["4:4:4", "4:2:2", "4:2:0"]


class AnonymizerSettings(BaseSettings):
    """How one exam is anonymised and verified; every field maps to `MEDSERVE_ANON_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="MEDSERVE_ANON_", extra="ignore", frozen=True)

    identifying_labels: tuple[str, ...] = Field(
        default=IDENTIFYING_LABELS,
        description="Page-1 labels whose values are removed (accent- and case-insensitive).",
    )
    extra_labels: tuple[str, ...] = Field(
        default=(), description="Site-specific identifying labels added to the standard list."
    )
    name_labels: tuple[str, ...] = Field(
        default=NAME_LABELS,
        description="Identifying labels holding a person's name (matched word by word too).",
    )
    required_labels: tuple[str, ...] = Field(
        default=("Nome",), description="Labels page 1 must carry with a value, else quarantine."
    )
    kept_labels: tuple[str, ...] = KEPT_LABELS
    layout_markers: tuple[str, ...] = Field(
        default=LAYOUT_MARKERS, description="Page 1 must contain one of these or it is quarantined."
    )
    page_count: int = Field(default=2, ge=2, description="Pages an exam must have.")
    dpi: Annotated[int, Field(ge=300, le=600)] = 450
    colour_mode: ColourMode = "rgb"
    anti_aliasing: Annotated[int, Field(ge=0, le=8)] = Field(
        default=8, description="MuPDF anti-aliasing level for page-2 rendering (8 = full)."
    )
    jpeg_quality: Annotated[int, Field(ge=50, le=100)] = 95
    jpeg_subsampling: JpegSubsampling = Field(
        default="4:2:0", description="Chroma subsampling; 4:2:0 is Pillow's (and the source's)."
    )
    zip_level: Annotated[int, Field(ge=0, le=9)] = Field(
        default=5, description="Deflate level of the output ZIP (0 stores)."
    )
    page_two_regions: tuple[Region, ...] = Field(
        default=((430.0, 500.0, 620.0, 585.0), (630.0, 495.0, 830.0, 585.0)),
        description="Page-2 rectangles burnt black (signature, CRM stamp), in page points.",
    )
    ocr_check: bool = Field(
        default=True, description="OCR the burnt page-2 regions of every output (tesseract)."
    )
    ocr_margin_points: float = Field(
        default=18.0, ge=0, description="Border OCR'd around each region: catches a moved stamp."
    )
    ocr_language: str = "por"
    ocr_dpi: Annotated[int, Field(ge=72, le=600)] = Field(
        default=150, description="Resolution the regions are OCR'd at; text there is >= 7 pt."
    )
    max_input_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1024, description="Larger inputs are quarantined unread."
    )

    @field_validator("page_two_regions")
    @classmethod
    def _regions_are_rectangles(cls, regions: tuple[Region, ...]) -> tuple[Region, ...]:
        for x0, y0, x1, y1 in regions:
            if x1 <= x0 or y1 <= y0:
                raise ValueError(f"region ({x0}, {y0}, {x1}, {y1}) is empty or inverted")
        return regions

    @property
    def all_identifying_labels(self) -> tuple[str, ...]:
        return self.identifying_labels + self.extra_labels


class PipelineSettings(BaseSettings):
    """How the anonymisation pipeline reads, shards and writes (`MEDSERVE_ANON_*`)."""

    model_config = SettingsConfigDict(env_prefix="MEDSERVE_ANON_", extra="ignore", frozen=True)

    workers: int = Field(default=2, ge=1, description="CPU workers (one process each).")
    files_per_block: int = Field(
        default=4, ge=1, description="Exams per Ray Data batch: amortises task overhead."
    )
    listing_window: int = Field(
        default=5000, ge=1, description="Keys listed ahead of the workers (bounds driver memory)."
    )
    list_page_size: int = Field(default=1000, ge=1, le=1000)
    input_suffix: str = Field(default=".pdf", description="Only keys ending so are exams.")
    s3_max_attempts: int = Field(default=10, ge=1, description="Per request, with backoff.")
    s3_read_timeout_seconds: float = Field(default=30.0, gt=0)
    pushgateway_url: str | None = Field(
        default=None,
        description="Prometheus Pushgateway the run pushes its metrics to (None: no metrics).",
    )
    push_interval_seconds: float = Field(
        default=15.0, gt=0, description="Least time between two pushes while exams finish."
    )


@lru_cache
def get_anonymizer_settings() -> AnonymizerSettings:
    return AnonymizerSettings()


@lru_cache
def get_pipeline_settings() -> PipelineSettings:
    return PipelineSettings()
