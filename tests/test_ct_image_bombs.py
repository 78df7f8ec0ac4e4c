"""Decompression bombs and lying headers are refused before decoding, with bounded memory.

The files are other producers' work where possible: pydicom's own test files (JPEG, JPEG-LS,
JPEG 2000 from GDCM, DCMTK, OpenJPEG...) for the header readers, and bombs made the way an
attacker makes them: a real JPEG 2000 codestream with its SIZ segment rewritten, PNGs written
with zlib directly, a Deflated Explicit VR dataset whose pixel data inflates to 300 MB. Each bomb
is decoded in a fresh process whose peak RSS is read back (issue 19 measured 1.8-3.4 GB before).
"""

from __future__ import annotations

import io
import itertools
import json
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import data_store
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_fragments
from pydicom.filebase import DicomBytesIO
from pydicom.uid import DeflatedExplicitVRLittleEndian

from medserve.ct.image_headers import frame_dimensions

REAL_CT = Path(data_store.__file__).parent / "data"
# Peak RSS of a fresh process that imports the decoder and refuses the bomb: ~110-130 MB here
# (NumPy, SciPy, Pillow, pydicom loaded); decoding any of these bombs would need 0.2-3.4 GB.
PEAK_RSS_BOUND_MB = 200

# pydicom's test files whose compressed frames carry a JPEG or JPEG 2000 codestream.
COMPRESSED_SAMPLES = (
    "JPEG2000.dcm",
    "MR_small_jp2klossless.dcm",
    "US1_J2KR.dcm",
    "RG3_J2KI.dcm",
    "GDCMJ2K_TextGBR.dcm",
    "SC_rgb_gdcm_KY.dcm",
    "examples_jpeg2k.dcm",
    "JPEG-LL.dcm",
    "JPGExtended.dcm",
    "JPEG-lossy.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_small_odd_jpeg.dcm",
    "examples_ybr_color.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "JPEGLSNearLossless_16.dcm",
    "SC_rgb_jls_lossy_line.dcm",
)


def _first_fragment(dataset: pydicom.Dataset) -> bytes:
    return next(itertools.islice(generate_fragments(dataset.PixelData), 1, 2))


@pytest.mark.parametrize("name", COMPRESSED_SAMPLES)
def test_codestream_headers_of_other_producers_declare_the_dicom_size(name: str) -> None:
    dataset = pydicom.dcmread(get_testdata_file(name))
    declared = frame_dimensions(_first_fragment(dataset))
    assert declared is not None
    assert (declared.rows, declared.columns) == (dataset.Rows, dataset.Columns)
    assert declared.samples == dataset.SamplesPerPixel


# -- the bombs ------------------------------------------------------------------------------------
def _with_siz(codestream: bytes, columns: int, rows: int) -> bytes:
    """The codestream with its SIZ image size rewritten (offsets stay 0)."""
    siz = codestream.index(b"\xff\x4f\xff\x51") + 4
    return codestream[: siz + 4] + struct.pack(">II", columns, rows) + codestream[siz + 12 :]


def _j2k_ct(header_side: int, codestream_side: int) -> bytes:
    """pydicom-data's real JPEG 2000 CT slice, its header and/or codestream claiming more."""
    dataset = pydicom.dcmread(REAL_CT / "693_J2KR.dcm")
    codestream = _with_siz(_first_fragment(dataset), codestream_side, codestream_side)
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

DECODE_AND_MEASURE = """
import json, resource, sys
from medserve.ct.imaging import ImageRejected, Window, decode_slice
data = open(sys.argv[1], "rb").read()
try:
    decode_slice(data, Window(), 16 * 1024 * 1024)
    outcome = {"status": 200, "code": "decoded"}
except ImageRejected as exc:
    outcome = {"status": exc.status, "code": exc.code}
outcome["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(outcome))
"""


def decode_in_fresh_process(path: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", DECODE_AND_MEASURE, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bomb_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    files = {}
    for name, (make, _) in BOMBS.items():
        files[name] = folder / name
        files[name].write_bytes(make())
    return files


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bomb_is_refused_before_decoding_with_bounded_memory(
    name: str, bomb_files: dict[str, Path]
) -> None:
    path = bomb_files[name]
    assert path.stat().st_size < 1024 * 1024  # small on the wire: the danger is the decoding
    outcome = decode_in_fresh_process(path)
    assert (outcome["status"], outcome["code"]) == (422, BOMBS[name][1])
    assert float(outcome["peak_rss_mb"]) < PEAK_RSS_BOUND_MB, outcome  # type: ignore[arg-type]


def test_a_real_slice_decodes_in_the_same_harness(tmp_path: Path) -> None:
    """The control: the measuring process does decode a legal slice (and stays small)."""
    path = tmp_path / "slice.dcm"
    path.write_bytes((REAL_CT / "693_J2KR.dcm").read_bytes())
    outcome = decode_in_fresh_process(path)
    assert outcome["code"] == "decoded"
    assert float(outcome["peak_rss_mb"]) < PEAK_RSS_BOUND_MB  # type: ignore[arg-type]


def test_a_corrupt_codestream_from_another_producer_is_refused_not_decoded() -> None:
    """pydicom's test file whose SIZ segment holds a sequence delimiter: every decoder fails on
    it (Pillow calls it a 3.8 T-pixel bomb); here it is a 422 from its header alone."""
    from medserve.ct.imaging import ImageRejected, Window, decode_slice

    data = Path(get_testdata_file("JPEG2000-embedded-sequence-delimiter.dcm")).read_bytes()
    with pytest.raises(ImageRejected) as refused:
        decode_slice(data, Window(), 16 * 1024 * 1024)
    assert refused.value.status == 422
