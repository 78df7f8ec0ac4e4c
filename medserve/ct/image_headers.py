"""Declared image dimensions, read from headers before anything is decoded.

A few kilobytes of JPEG 2000 or PNG can declare a 24000 x 24000 image: decoding it first and
checking the size afterwards costs gigabytes (issue 19). These readers take the dimensions a
compressed DICOM frame's own codestream declares, so the pixel budget is enforced before any
pixel buffer is allocated (Pillow reads a PNG/JPEG file's header lazily by itself). Every reader
looks only at the first bytes it needs and never trusts a length to allocate.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

# JPEG start-of-frame markers (baseline, extended, progressive, lossless, their arithmetic and
# hierarchical forms) and JPEG-LS's SOF55; C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
_SOF_MARKERS = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}) | {0xF7}
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
# A codestream's main header is small; the SIZ marker follows SOC at once (ISO 15444-1 A.5),
# and a JP2 file's header boxes come first: looking further is not needed.
_J2K_SEARCH_BYTES = 64 * 1024
DEFLATED_TRANSFER_SYNTAX = "1.2.840.10008.1.2.1.99"


class HeaderError(ValueError):
    """The header is unreadable or declares nothing usable."""


@dataclass(frozen=True, slots=True)
class Dimensions:
    """What an image declares: rows x columns x samples (colour components)."""

    rows: int
    columns: int
    samples: int = 1

    @property
    def pixels(self) -> int:
        return self.rows * self.columns


def jpeg_dimensions(codestream: bytes) -> Dimensions:
    """Dimensions from a JPEG / JPEG-LS stream's start-of-frame segment."""
    if not codestream.startswith(b"\xff\xd8"):
        raise HeaderError("not a JPEG stream (no SOI marker)")
    offset = 2
    while offset + 4 <= len(codestream):
        if codestream[offset] != 0xFF:
            raise HeaderError("JPEG marker expected")
        marker = codestream[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in _STANDALONE_MARKERS:
            offset += 2
            continue
        (length,) = struct.unpack_from(">H", codestream, offset + 2)
        if marker in _SOF_MARKERS:
            if offset + 10 > len(codestream):
                break
            rows, columns, samples = struct.unpack_from(">HHB", codestream, offset + 5)
            if rows == 0 or columns == 0:
                raise HeaderError("JPEG frame with no declared height or width")
            return Dimensions(rows, columns, samples)
        if marker in (0xDA, 0xD9) or length < 2:  # scan or end before any frame header
            break
        offset += 2 + length
    raise HeaderError("no JPEG frame header")


def j2k_dimensions(codestream: bytes) -> Dimensions:
    """Dimensions from a JPEG 2000 codestream's SIZ segment (a bare codestream or a JP2 file)."""
    start = codestream.find(_J2K_SOC_SIZ, 0, _J2K_SEARCH_BYTES)
    if start < 0:
        raise HeaderError("no JPEG 2000 SIZ segment")
    siz = start + 4
    if siz + 38 > len(codestream):
        raise HeaderError("truncated JPEG 2000 SIZ segment")
    x_size, y_size, x_offset, y_offset = struct.unpack_from(">IIII", codestream, siz + 4)
    (samples,) = struct.unpack_from(">H", codestream, siz + 36)
    columns, rows = x_size - x_offset, y_size - y_offset
    if rows <= 0 or columns <= 0:
        raise HeaderError("JPEG 2000 image with no area")
    return Dimensions(rows, columns, samples)


def frame_dimensions(first_fragment: bytes) -> Dimensions | None:
    """What the codestream of a compressed DICOM frame declares (JPEG family or JPEG 2000);
    None for codecs whose output size comes from Rows/Columns alone (RLE)."""
    if first_fragment.startswith(b"\xff\xd8"):
        return jpeg_dimensions(first_fragment)
    if _J2K_SOC_SIZ in first_fragment[:_J2K_SEARCH_BYTES] or first_fragment[4:8] == b"jP  ":
        return j2k_dimensions(first_fragment)
    return None


def inflated_size_within(deflated: bytes, budget: int) -> bool:
    """Whether a raw-deflate stream inflates to at most `budget` bytes, found out with at most
    `budget` bytes of output in memory (a Deflated Explicit VR DICOM is one such stream)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflater.decompress(deflated, budget)
    except zlib.error:
        return True  # corrupt: pydicom's own reading refuses it with a clear error
    return not inflater.unconsumed_tail
