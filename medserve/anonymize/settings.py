"""Anonymiser and pipeline settings (`MEDSERVE_ANON_*`).

Defaults are the source system's settings (450 DPI, RGB, JPEG quality 95, full anti-aliasing, ZIP
Deflate level 5). What is kept of an exam is no setting: it is the layout profiles' (layouts.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ColourMode = Literal["rgb", "gray"]
JpegSubsampling = Literal["4:4:4", "4:2:2", "4:2:0"]


class AnonymizerSettings(BaseSettings):
    """How one exam is anonymised and verified; every field maps to `MEDSERVE_ANON_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="MEDSERVE_ANON_", extra="ignore", frozen=True)

    layouts_dir: Path | None = Field(
        default=None,
        description="A folder of site layout profiles (*.toml) added to the shipped ones; a site "
        "profile with a shipped profile's name replaces it.",
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
    ocr_sample: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=1.0,
        description="Share of exams whose whole output is OCR'd by the verifier (1.0 = every "
        "exam); chosen by the input key's hash, so a re-run OCRs the same exams.",
    )
    ocr_language: str = "por"
    ocr_dpi: Annotated[int, Field(ge=72, le=600)] = Field(
        default=150, description="Resolution outputs are OCR'd at; the control text is 7 pt."
    )
    max_input_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1024, description="Larger inputs are quarantined unread."
    )
    # --- the budget per exam: each is checked before the work it bounds (`page_too_large`,
    # `image_too_large`, `exam_timeout`); the defaults leave room for A3 pages at 600 DPI.
    max_page_pt: float = Field(
        default=1500.0,
        ge=100.0,
        description="Longest side of any page's media or crop box, in points (A3 is 1191).",
    )
    max_image_pixels: int = Field(
        default=40_000_000,
        ge=1,
        description="Width x height of any image in the file, read from its dictionary "
        "without decoding it (a 600 DPI A4 scan is 35 M).",
    )
    max_stream_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024 * 1024,
        description="Decoded size of any stream but an image (contents, fonts, forms), "
        "measured by decoding it and discarding the bytes as they come.",
    )
    max_render_pixels: int = Field(
        default=40_000_000,
        ge=1,
        description="Pixels of the page-2 raster at `dpi` (A4 at 600 DPI is 35 M); a larger "
        "page is refused before anything is rendered.",
    )
    render_band_pixels: int = Field(
        default=16_000_000,
        ge=100_000,
        description="The tracing area is rendered in bands of at most this many pixels, so a "
        "render holds the page raster plus one band (the default tracing area is one band).",
    )
    exam_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Wall-clock limit per exam; the exam runs in a child process that is "
        "killed when it is exceeded (MuPDF calls cannot be interrupted in-process).",
    )
    exam_start_timeout_s: float = Field(
        default=120.0, gt=0, description="Time the exam process may take to start."
    )


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
    worker_retries: int = Field(
        default=2,
        ge=0,
        description="Times a block of exams is retried when its worker process dies (killed "
        "by the kernel, a node lost); beyond that its exams are quarantined as `worker_died`.",
    )
