"""Page 2, keep-only: render the profile's tracing area, everything else on the page is black.

Only the tracing area is rendered (less work than the whole page) and copied onto a black page
of the full size, so the header, signature, CRM stamp and anything else outside the area never
reach the output. The output page is that JPEG alone: nothing of the source page (text, vectors,
fonts) survives.
"""

from __future__ import annotations

import io
import math
import threading
import time
from dataclasses import dataclass

import pymupdf
from PIL import Image

from medserve.anonymize.errors import ExamRejected
from medserve.anonymize.settings import AnonymizerSettings

Area = tuple[float, float, float, float]  # x0, y0, x1, y1 in page points, top-left origin
_PIL_MODES = {"rgb": "RGB", "gray": "L"}
_COLOURSPACES = {"rgb": pymupdf.csRGB, "gray": pymupdf.csGRAY}
_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
# MuPDF's anti-aliasing level is process-global: hold it while rendering with our level.
_RENDER_LOCK = threading.Lock()
# Rows rendered beyond each band and not kept (twice the depth where seams were seen to differ).
BAND_MARGIN_ROWS = 32


@dataclass
class RasterPage:
    """Page 2 as it goes into the output: a JPEG and the page size it is placed at."""

    jpeg: bytes
    width_pt: float
    height_pt: float
    width_px: int
    height_px: int
    render_seconds: float
    encode_seconds: float


def area_pixels(area: Area, scale: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """An area in page points as whole pixels, rounded inwards and clipped to the image: a pixel
    only partly inside the area is burnt."""
    x0, y0, x1, y1 = area
    width, height = size
    return (
        max(0, math.ceil(x0 * scale)),
        max(0, math.ceil(y0 * scale)),
        min(width, math.floor(x1 * scale)),
        min(height, math.floor(y1 * scale)),
    )


def bands(box: tuple[int, int, int, int], max_pixels: int) -> list[tuple[int, int, int, int]]:
    """`box` (pixels) cut into full-width horizontal bands of at most `max_pixels` each (at
    least one row per band)."""
    x0, y0, x1, y1 = box
    rows = max(1, max_pixels // max(1, x1 - x0))
    return [(x0, top, x1, min(y1, top + rows)) for top in range(y0, y1, rows)]


def rasterise(page: pymupdf.Page, area: Area, settings: AnonymizerSettings) -> RasterPage:
    """Page 2 at the configured DPI with only `area` (page points) kept, encoded as JPEG."""
    started = time.perf_counter()
    scale = settings.dpi / 72
    colourspace = _COLOURSPACES[settings.colour_mode]
    # The page's pixel size as MuPDF would render it whole.
    size = (round(page.rect.width * scale), round(page.rect.height * scale))
    box = area_pixels(area, scale, size)
    if size[0] * size[1] > settings.max_render_pixels:  # budget.check_pages refuses it first
        raise ExamRejected("page_too_large", f"{size[0]}x{size[1]} pixels at {settings.dpi} DPI")
    canvas = pymupdf.Pixmap(colourspace, pymupdf.IRect(0, 0, *size), False)
    canvas.clear_with(0)
    if box[2] > box[0] and box[3] > box[1]:
        with _RENDER_LOCK:
            pymupdf.TOOLS.set_aa_level(settings.anti_aliasing)
            # The page is interpreted once; each band only rasterises its part of the list.
            display = page.get_displaylist()
            matrix = pymupdf.Matrix(scale, scale)
            for band in bands(box, settings.render_band_pixels):
                x0, top, x1, bottom = band
                # Rendered with a margin, only the band itself kept: MuPDF's anti-aliasing
                # differs near a clip's edge (by up to 28 levels, 16 rows deep, measured).
                reach = (x0, max(box[1], top - BAND_MARGIN_ROWS), x1)
                reach += (min(box[3], bottom + BAND_MARGIN_ROWS),)
                tile = display.get_pixmap(
                    matrix=matrix,
                    colorspace=colourspace,
                    alpha=False,
                    clip=pymupdf.Rect(reach) / scale,
                )
                # Pixmaps share device coordinates: exactly the band's pixels land in place.
                canvas.copy(tile, pymupdf.IRect(band))
                del tile
            del display
    mode = _PIL_MODES[settings.colour_mode]
    # A view of MuPDF's samples, not a copy: nothing draws on the image any more.
    image = Image.frombuffer(mode, size, canvas.samples_mv, "raw", mode, 0, 1)
    rendered = time.perf_counter()
    buffer = io.BytesIO()
    image.save(
        buffer,
        "JPEG",
        quality=settings.jpeg_quality,
        subsampling=_SUBSAMPLING[settings.jpeg_subsampling],
        dpi=(settings.dpi, settings.dpi),
    )
    del image, canvas
    return RasterPage(
        jpeg=buffer.getvalue(),
        width_pt=page.rect.width,
        height_pt=page.rect.height,
        width_px=size[0],
        height_px=size[1],
        render_seconds=rendered - started,
        encode_seconds=time.perf_counter() - rendered,
    )
