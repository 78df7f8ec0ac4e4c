"""Decompression bombs and lying headers are refused before decoding, with bounded memory.

The files are other producers' work where possible: pydicom's own test files (JPEG, JPEG-LS,
JPEG 2000 from GDCM, DCMTK, OpenJPEG...) for the header readers, and bombs made the way an
attacker makes them: a real JPEG 2000 codestream with its SIZ segment rewritten, PNGs written
with zlib directly, a Deflated Explicit VR dataset whose pixel data inflates to 300 MB. Each bomb
is decoded in a fresh process whose peak RSS is read back (issue 19 measured 1.8-3.4 GB before).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from medserve.ct.image_headers import frame_dimensions
from tests.image_bombs import BOMBS, REAL_CT, first_fragment

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


@pytest.mark.parametrize("name", COMPRESSED_SAMPLES)
def test_codestream_headers_of_other_producers_declare_the_dicom_size(name: str) -> None:
    dataset = pydicom.dcmread(get_testdata_file(name))
    declared = frame_dimensions(first_fragment(dataset))
    assert declared is not None
    assert (declared.rows, declared.columns) == (dataset.Rows, dataset.Columns)
    assert declared.samples == dataset.SamplesPerPixel


DECODE_AND_MEASURE = """
import json, sys
from medserve.ct.imaging import ImageRejected, Window, decode_slice
data = open(sys.argv[1], "rb").read()
try:
    decode_slice(data, Window(), 16 * 1024 * 1024)
    outcome = {"status": 200, "code": "decoded"}
except ImageRejected as exc:
    outcome = {"status": exc.status, "code": exc.code}
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across execve, so it would report the peak
# of the pytest process this one was forked from.
status = open("/proc/self/status").read().splitlines()
peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
outcome["peak_rss_mb"] = peak_kb / 1024
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
