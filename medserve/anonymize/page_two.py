"""Page 2: rasterise the tracing, burn the signature and CRM-stamp regions black, encode as JPEG.

The output page is the JPEG alone, so nothing of the source page (text, vectors, fonts) survives.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass

import pymupdf
from PIL import Image, ImageDraw

from medserve.anonymize.settings import AnonymizerSettings

_PIL_MODES = {"rgb": "RGB", "gray": "L"}
_COLOURSPACES = {"rgb": pymupdf.csRGB, "gray": pymupdf.csGRAY}
_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
# MuPDF's anti-aliasing level is process-global: hold it while rendering with our level.
_RENDER_LOCK = threading.Lock()


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


def region_pixels(
    region: tuple[float, float, float, float], scale: float, size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """A region in page points as whole pixels, rounded outwards and clipped to the image."""
    x0, y0, x1, y1 = region
    width, height = size
    return (
        max(0, int(x0 * scale)),
        max(0, int(y0 * scale)),
        min(width, -int(-x1 * scale)),
        min(height, -int(-y1 * scale)),
    )


def rasterise(page: pymupdf.Page, settings: AnonymizerSettings) -> RasterPage:
    """Render `page` at the configured DPI, burn the configured regions, encode as JPEG."""
    started = time.perf_counter()
    with _RENDER_LOCK:
        pymupdf.TOOLS.set_aa_level(settings.anti_aliasing)
        pixmap = page.get_pixmap(
            dpi=settings.dpi, colorspace=_COLOURSPACES[settings.colour_mode], alpha=False
        )
    mode = _PIL_MODES[settings.colour_mode]
    size = (pixmap.width, pixmap.height)
    # frombytes copies the samples into an image Pillow may draw on.
    image = Image.frombytes(mode, size, pixmap.samples)
    del pixmap
    draw = ImageDraw.Draw(image)
    scale = settings.dpi / 72
    for region in settings.page_two_regions:
        x0, y0, x1, y1 = region_pixels(region, scale, size)
        if x1 > x0 and y1 > y0:
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=0)
    rendered = time.perf_counter()
    buffer = io.BytesIO()
    image.save(
        buffer,
        "JPEG",
        quality=settings.jpeg_quality,
        subsampling=_SUBSAMPLING[settings.jpeg_subsampling],
        dpi=(settings.dpi, settings.dpi),
    )
    return RasterPage(
        jpeg=buffer.getvalue(),
        width_pt=page.rect.width,
        height_pt=page.rect.height,
        width_px=size[0],
        height_px=size[1],
        render_seconds=rendered - started,
        encode_seconds=time.perf_counter() - rendered,
    )
