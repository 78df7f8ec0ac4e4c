"""CT slice decoding and preprocessing, the same for training and serving.

A slice arrives as DICOM (the native format: pixels are rescaled to Hounsfield units and shown
through the lung window) or as an 8/16-bit grayscale PNG/JPEG that is *already* in the lung
window (black = level - width/2, white = level + width/2); the service cannot recover HU from a
picture, so that convention is the contract for picture inputs.

Everything downstream sees the windowed slice in [0, 1], resized to the model's input size.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import logging
import struct
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from medserve.ct.image_headers import (
    DEFLATED_TRANSFER_SYNTAX,
    HeaderError,
    frame_dimensions,
    inflated_size_within,
)

ImageFormat = Literal["dicom", "png", "jpeg"]

CT_MODALITY = "CT"
# Stored pixels are HU after rescale whatever the display polarity, so both are fine.
GRAYSCALE_PHOTOMETRICS = ("MONOCHROME2", "MONOCHROME1")
IDENTIFIER_KEYWORDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "AccessionNumber",
    "InstanceNumber",
)
# Lung parenchyma incl. ground glass lies below this; soft tissue, vessels and bone above it.
LUNG_DENSITY_MAX_HU = -400.0
BODY_MIN_HU = -400.0
AIR_MAX_HU = -950.0  # lungs sit near -860 HU, the air around the patient near -1000
# The lung-field estimate only needs the coarse shape: computed on a ~128-px view of the slice.
LUNG_FIELD_VIEW_SIDE = 128

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
DICOM_MAGIC_OFFSET = 128
DICOM_MAGIC = b"DICM"
DEFAULT_SIDES = (64, 2048)
MAX_BYTES_PER_PIXEL = 4  # 32 bits allocated at most
DEFLATED_HEADER_ALLOWANCE = 1024 * 1024  # the elements besides the pixels


class ImageRejected(Exception):
    """An input the model must not read, with the HTTP status and a stable error code."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Window:
    """A display window in HU."""

    center: float = -600.0
    width: float = 1500.0

    @property
    def low(self) -> float:
        return self.center - self.width / 2

    def apply(self, hu: np.ndarray) -> np.ndarray:
        """HU -> [0, 1] float32 through this window."""
        scaled = (np.asarray(hu, dtype=np.float32) - np.float32(self.low)) / np.float32(self.width)
        return np.clip(scaled, np.float32(0), np.float32(1))

    def hu_of(self, windowed: np.ndarray) -> np.ndarray:
        """The HU a windowed value stands for (clipped values stay at the window's ends)."""
        return np.asarray(windowed, dtype=np.float32) * np.float32(self.width) + np.float32(
            self.low
        )


@dataclass(frozen=True)
class DecodedSlice:
    """One slice ready for the model: windowed [0, 1] pixels at native resolution."""

    windowed: np.ndarray  # float32 [rows, columns]
    source_format: ImageFormat
    lung_field_fraction: float
    sha256: str  # of the file as received: a fingerprint for the prediction log
    identifiers: dict[str, str] = field(default_factory=dict)  # DICOM only; never logged


def sniff_format(data: bytes) -> ImageFormat:
    """The format from the file's magic bytes (content types from clients are often wrong)."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == DICOM_MAGIC:
        return "dicom"
    raise ImageRejected(
        415,
        "unsupported_media_type",
        "not a DICOM file (Part 10, with the DICM preamble), PNG or JPEG image",
    )


def decode_slice(
    data: bytes,
    window: Window,
    max_bytes: int,
    side_range: tuple[int, int] = DEFAULT_SIDES,
) -> DecodedSlice:
    """Bytes of a DICOM/PNG/JPEG slice -> `DecodedSlice`, or `ImageRejected` saying why not."""
    if len(data) > max_bytes:
        raise ImageRejected(413, "image_too_large", f"the file exceeds {max_bytes} bytes")
    source_format = sniff_format(data)
    if source_format == "dicom":
        hu, identifiers = read_dicom_hu(data, side_range)
        windowed = window.apply(hu)
    else:
        windowed = read_picture(data, side_range)
        identifiers = {}
    return DecodedSlice(
        windowed=windowed,
        source_format=source_format,
        lung_field_fraction=lung_field_fraction(windowed, window),
        sha256=hashlib.sha256(data).hexdigest(),
        identifiers=identifiers,
    )


@functools.cache
def _quiet_pydicom() -> None:
    """pydicom quotes offending element values (names, dates, UIDs) in its warnings and log
    records; those are patient data, so its validation is off and its warnings are dropped."""
    import pydicom

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)


def read_dicom_hu(
    data: bytes, side_range: tuple[int, int] = DEFAULT_SIDES
) -> tuple[np.ndarray, dict[str, str]]:
    """One CT slice in HU (float32) and its identifiers, checked for what the model can read;
    the size it declares is checked before its pixels are decoded."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    _quiet_pydicom()
    _check_deflated_size(data, side_range)
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
        raise ImageRejected(
            422, "invalid_dicom", f"unreadable DICOM: {type(exc).__name__}"
        ) from None
    _check_dicom(dataset)
    _check_declared_size(dataset, side_range)
    try:
        stored = dataset.pixel_array
    except Exception as exc:  # decoders raise many types; the message may quote file contents
        raise ImageRejected(
            422,
            "undecodable_pixels",
            f"pixel data of transfer syntax {dataset.file_meta.TransferSyntaxUID.name} "
            f"could not be decoded ({type(exc).__name__})",
        ) from None
    if stored.ndim != 2:
        raise ImageRejected(
            422, "not_a_slice", f"pixel array of shape {list(stored.shape)}; expected one slice"
        )
    hu = _to_hu(stored, dataset)
    identifiers = {
        keyword: str(dataset.get(keyword))
        for keyword in IDENTIFIER_KEYWORDS
        if dataset.get(keyword) not in (None, "")
    }
    return hu, identifiers


def _to_hu(stored: np.ndarray, dataset: Any) -> np.ndarray:
    """Stored values -> HU in float32: slope/intercept in one pass (pydicom's `apply_rescale`
    computes in float64, 3x slower per request); a Modality LUT, rare in CT, goes through it."""
    from pydicom.pixels import apply_rescale

    try:
        if "ModalityLUTSequence" in dataset:
            return apply_rescale(stored, dataset).astype(np.float32, copy=False)
        slope = _number(dataset.get("RescaleSlope"), default=1.0)
        intercept = _number(dataset.get("RescaleIntercept"), default=0.0)
    except (ValueError, TypeError, KeyError, IndexError):
        raise ImageRejected(
            422, "invalid_rescale", "unreadable RescaleSlope/RescaleIntercept or Modality LUT"
        ) from None
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
        raise ImageRejected(
            422, "invalid_rescale", "RescaleSlope/Intercept must be finite, slope != 0"
        )
    hu = stored.astype(np.float32)
    hu *= np.float32(slope)
    hu += np.float32(intercept)
    return hu


def _number(value: Any, default: float) -> float:
    """A DS element's value; absent or empty means the DICOM default (0 stays 0)."""
    return default if value is None or value == "" else float(value)


def _check_dicom(dataset: object) -> None:
    """Refuse what is valid DICOM but not one grayscale CT slice."""
    get = dataset.get  # type: ignore[attr-defined]
    modality = str(get("Modality", "") or "")
    if modality != CT_MODALITY:
        shown = modality or "missing"
        raise ImageRejected(
            422, "not_ct", f"modality {shown}: this model reads CT slices (Modality CT)"
        )
    if "PixelData" not in dataset:  # type: ignore[operator]
        raise ImageRejected(422, "no_pixel_data", "the DICOM file holds no pixel data")
    frames = int(get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageRejected(
            422,
            "volume_not_supported",
            f"a volume of {frames} frames; send one axial slice per file (the model classifies "
            "slices; split a multi-frame series into single-frame instances)",
        )
    photometric = str(get("PhotometricInterpretation", "") or "")
    samples = int(get("SamplesPerPixel", 1) or 1)
    if photometric not in GRAYSCALE_PHOTOMETRICS or samples != 1:
        raise ImageRejected(
            422,
            "unsupported_photometric",
            f"photometric interpretation {photometric or 'missing'} with {samples} sample(s) per "
            "pixel; CT slices are MONOCHROME2 grayscale",
        )


def read_picture(data: bytes, side_range: tuple[int, int] = DEFAULT_SIDES) -> np.ndarray:
    """A grayscale PNG/JPEG (already lung-windowed) -> [0, 1] float32. Pillow reads the header
    at `open` and the pixels at `load`: the size is checked in between."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            columns, rows = image.size
            _check_side((rows, columns), side_range)
            image.load()
            return _grayscale(image)
    except Image.DecompressionBombError:
        # Raised by `open` itself for a header declaring over twice Pillow's pixel limit.
        raise ImageRejected(
            422, "unsupported_size", "the image declares more pixels than any CT slice has"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(
            422, "invalid_image", f"unreadable image: {type(exc).__name__}"
        ) from None


def _grayscale(image: Image.Image) -> np.ndarray:
    if getattr(image, "n_frames", 1) > 1:
        raise ImageRejected(422, "not_a_slice", "an animated/multi-frame image; send one slice")
    if image.mode in ("L", "LA"):
        return np.asarray(image.getchannel(0), dtype=np.float32) / np.float32(255)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        pixels = np.asarray(image, dtype=np.float32)
        return np.clip(pixels / np.float32(65535), 0.0, 1.0)
    if image.mode in ("RGB", "RGBA"):
        rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
        # A grayscale slice saved as RGB is fine; a colour picture is not a CT slice.
        if np.abs(rgb - rgb[..., :1]).max() > 2:
            raise ImageRejected(
                422,
                "unsupported_photometric",
                "a colour image; CT slices are grayscale (send the lung-windowed slice)",
            )
        return rgb[..., 0].astype(np.float32) / np.float32(255)
    raise ImageRejected(
        422, "unsupported_photometric", f"image mode {image.mode}; send 8/16-bit grayscale"
    )


def _check_deflated_size(data: bytes, side_range: tuple[int, int]) -> None:
    """A Deflated Explicit VR file is inflated whole by pydicom before any element can be read:
    refuse one that would inflate past the largest slice allowed (a few KiB can hold GiBs)."""
    meta_end = _file_meta_end(data)
    if DEFLATED_TRANSFER_SYNTAX.encode() not in data[DICOM_MAGIC_OFFSET:meta_end]:
        return
    largest = side_range[1] ** 2 * MAX_BYTES_PER_PIXEL + DEFLATED_HEADER_ALLOWANCE
    if not inflated_size_within(data[meta_end:], largest):
        raise ImageRejected(
            422, "unsupported_size", "the deflated dataset inflates past the largest CT slice"
        )


def _file_meta_end(data: bytes) -> int:
    """Where the file meta group ends: its first element, (0002,0000) UL, holds its length."""
    start = DICOM_MAGIC_OFFSET + 4
    if data[start : start + 6] != b"\x02\x00\x00\x00UL" or len(data) < start + 12:
        return min(len(data), start)
    (length,) = struct.unpack_from("<I", data, start + 8)
    return min(len(data), start + 12 + length)


def _check_declared_size(dataset: Any, side_range: tuple[int, int]) -> None:
    """Rows/Columns/BitsAllocated, and the size the compressed frame's own codestream declares
    (the decoder allocates what the codestream says, whatever the DICOM header claims)."""
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        bits = int(dataset.get("BitsAllocated", 16) or 16)
    except (AttributeError, TypeError, ValueError):
        raise ImageRejected(422, "invalid_dicom", "missing or unreadable Rows/Columns") from None
    _check_side((rows, columns), side_range)
    if bits not in (8, 16, 32):
        raise ImageRejected(
            422, "unsupported_pixels", f"{bits} bits allocated per pixel; CT slices use 16"
        )
    if not dataset.file_meta.TransferSyntaxUID.is_compressed:
        return
    from pydicom.encaps import generate_fragments

    try:
        # The first item is always the Basic Offset Table (maybe empty); the frame follows.
        fragments = generate_fragments(dataset.PixelData)
        first = next(itertools.islice(fragments, 1, 2), b"")
        declared = frame_dimensions(first)
    except (HeaderError, ValueError, struct.error):
        raise ImageRejected(
            422, "undecodable_pixels", "the compressed frame's header is unreadable"
        ) from None
    if declared is not None and (declared.rows, declared.columns) != (rows, columns):
        raise ImageRejected(
            422,
            "inconsistent_dimensions",
            f"the frame's codestream declares {declared.columns}x{declared.rows} pixels, "
            f"the DICOM header {columns}x{rows}",
        )


def _check_side(shape: tuple[int, ...], side_range: tuple[int, int]) -> None:
    low, high = side_range
    if min(shape) < low or max(shape) > high:
        raise ImageRejected(
            422,
            "unsupported_size",
            f"image of {shape[1]}x{shape[0]} pixels; sides must be {low}-{high}",
        )


def lung_field_fraction(windowed: np.ndarray, window: Window) -> float:
    """Share of the body's cross-section at lung density (0 for a head or abdomen slice).

    Body = everything above fat/soft-tissue density with its holes filled, so the lungs (holes
    inside the chest wall) count as body while the air around the patient does not.
    """
    from scipy.ndimage import binary_fill_holes

    step = max(1, min(windowed.shape) // LUNG_FIELD_VIEW_SIDE)
    hu = window.hu_of(windowed[::step, ::step])
    body = binary_fill_holes(hu > BODY_MIN_HU)
    body_pixels = int(body.sum())
    if body_pixels == 0:
        return 0.0
    lung = body & (hu <= LUNG_DENSITY_MAX_HU)
    return float(lung.sum()) / body_pixels


def model_input(windowed: np.ndarray, size: int) -> np.ndarray:
    """Windowed slice -> [size, size, 1] float32, the input of every architecture."""
    image = Image.fromarray(np.ascontiguousarray(windowed, dtype=np.float32))
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)[..., np.newaxis]
