"""Decompression bombs made the way an attacker makes them (issue 19's reproductions): a real
JPEG 2000 codestream with its SIZ segment rewritten, PNGs written with zlib directly, a Deflated
Explicit VR dataset whose pixel data inflates to 300 MB. Each is small on the wire."""

from __future__ import annotations

import io
import itertools
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import data_store
import pydicom
from pydicom.encaps import generate_fragments
from pydicom.filebase import DicomBytesIO
from pydicom.uid import DeflatedExplicitVRLittleEndian

REAL_CT = Path(data_store.__file__).parent / "data"


def first_fragment(dataset: pydicom.Dataset) -> bytes:
    """The first frame fragment (the item after the Basic Offset Table)."""
    return next(itertools.islice(generate_fragments(dataset.PixelData), 1, 2))


def _with_siz(codestream: bytes, columns: int, rows: int) -> bytes:
    """The codestream with its SIZ image size rewritten (offsets stay 0)."""
    siz = codestream.index(b"\xff\x4f\xff\x51") + 4
    return codestream[: siz + 4] + struct.pack(">II", columns, rows) + codestream[siz + 12 :]


def _j2k_ct(header_side: int, codestream_side: int) -> bytes:
    """pydicom-data's real JPEG 2000 CT slice, its header and/or codestream claiming more."""
    dataset = pydicom.dcmread(REAL_CT / "693_J2KR.dcm")
    codestream = _with_siz(first_fragment(dataset), codestream_side, codestream_side)
    dataset.PixelData = pydicom.encaps.encapsulate([codestream])
    dataset.Rows = dataset.Columns = header_side
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _png(columns: int, rows: int, colour_type: int, channels: int) -> bytes:
    """An all-black 8-bit PNG written with zlib directly, row by row (no Pillow involved)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + columns * channels)  # filter byte + pixels
    compressed = b"".join(compressor.compress(row) for _ in range(rows)) + compressor.flush()
    header = struct.pack(">IIBBBBB", columns, rows, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", compressed)
        + chunk(b"IEND", b"")
    )


def _deflated_ct(pixel_bytes: int) -> bytes:
    """A Deflated Explicit VR CT dataset of a legal 512x512 header whose pixel data element
    inflates to `pixel_bytes` (pydicom inflates the whole dataset before reading any element)."""
    dataset = pydicom.dcmread(REAL_CT / "693_UNCI.dcm")
    del dataset.PixelData
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta = DicomBytesIO()
    pydicom.filewriter.write_file_meta_info(meta, dataset.file_meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(body, dataset)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [compressor.compress(body.getvalue())]
    pixel_header = b"\xe0\x7f\x10\x00OB\x00\x00" + struct.pack("<I", pixel_bytes)
    parts.append(compressor.compress(pixel_header))
    block = b"\x00" * (16 * 1024 * 1024)
    parts.extend(compressor.compress(block) for _ in range(pixel_bytes // len(block)))
    parts.append(compressor.flush())
    return b"\x00" * 128 + b"DICM" + meta.getvalue() + b"".join(parts)


BOMBS: dict[str, tuple[Callable[[], bytes], str]] = {
    # Issue 19: a 3 KiB JPEG 2000 DICOM of 24000^2 pixels peaked at ~3.4 GB before its 422.
    "j2k_dicom_24000": (lambda: _j2k_ct(24000, 24000), "unsupported_size"),
    # The DICOM header is legal, the codestream (what the decoder allocates) is not.
    "j2k_codestream_lies": (lambda: _j2k_ct(512, 24000), "inconsistent_dimensions"),
    # A 230 KiB RGB PNG of 9000^2 peaked at 1.77 GB.
    "png_rgb_9000": (lambda: _png(9000, 9000, 2, 3), "unsupported_size"),
    # A 14000^2 PNG raised Pillow's DecompressionBombError, uncaught (500).
    "png_gray_14000": (lambda: _png(14000, 14000, 0, 1), "unsupported_size"),
    "deflated_dicom_300mb": (lambda: _deflated_ct(300 * 1024 * 1024), "unsupported_size"),
}
