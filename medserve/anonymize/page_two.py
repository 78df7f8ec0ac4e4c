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

from medserve.anonymize.settings import AnonymizerSettings

Area = tuple[float, float, float, float]  # x0, y0, x1, y1 in page points, top-left origin
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


def rasterise(page: pymupdf.Page, area: Area, settings: AnonymizerSettings) -> RasterPage:
    """Page 2 at the configured DPI with only `area` (page points) kept, encoded as JPEG."""
    started = time.perf_counter()
    scale = settings.dpi / 72
    colourspace = _COLOURSPACES[settings.colour_mode]
    # The page's pixel size as MuPDF would render it whole.
    size = (round(page.rect.width * scale), round(page.rect.height * scale))
    box = area_pixels(area, scale, size)
    canvas = pymupdf.Pixmap(colourspace, pymupdf.IRect(0, 0, *size), False)
    canvas.clear_with(0)
    if box[2] > box[0] and box[3] > box[1]:
        with _RENDER_LOCK:
            pymupdf.TOOLS.set_aa_level(settings.anti_aliasing)
            clip = pymupdf.Rect(box) / scale
            tile = page.get_pixmap(dpi=settings.dpi, colorspace=colourspace, alpha=False, clip=clip)
        # Pixmaps share device coordinates: exactly the area's pixels land in their place.
        canvas.copy(tile, pymupdf.IRect(box))
        del tile
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
