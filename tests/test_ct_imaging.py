"""CT decoding, windowing, refusals and dataset splitting (no model needed)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import data_store
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medserve.ct.dataset import (
    Augmentation,
    SliceSet,
    augment,
    split_by_patient,
    undersample,
)
from medserve.ct.imaging import ImageRejected, Window, decode_slice, model_input

REAL_DATA = Path(data_store.__file__).parent / "data"
WINDOW = Window()
LIMIT = 16 * 1024 * 1024


def decode(path: Path) -> object:
    return decode_slice(path.read_bytes(), WINDOW, LIMIT)


def test_window_maps_lung_window_ends_to_0_and_1() -> None:
    hu = np.array([-2000, -1350, -600, 150, 3000], dtype=np.float32)
    assert WINDOW.apply(hu).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert WINDOW.hu_of(np.array([0.5], dtype=np.float32))[0] == -600


@pytest.mark.parametrize(
    "name", ["693_UNCI.dcm", "693_J2KR.dcm", "bad_sequence.dcm", "explicit_VR-UN.dcm"]
)
def test_real_ct_files_decode_in_every_transfer_syntax(name: str) -> None:
    """Uncompressed, JPEG 2000 and JPEG lossless CT from pydicom-data decode to HU."""
    decoded = decode(REAL_DATA / name)
    dataset = pydicom.dcmread(REAL_DATA / name)
    hu = pydicom.pixels.apply_rescale(dataset.pixel_array, dataset)
    assert decoded.windowed.shape == hu.shape
    np.testing.assert_allclose(decoded.windowed, WINDOW.apply(hu), atol=1e-6)
    assert decoded.identifiers["SOPInstanceUID"] == str(dataset.SOPInstanceUID)


def test_lossless_and_uncompressed_copies_decode_alike() -> None:
    plain, jpeg2000 = decode(REAL_DATA / "693_UNCR.dcm"), decode(REAL_DATA / "693_J2KR.dcm")
    np.testing.assert_array_equal(plain.windowed, jpeg2000.windowed)


@pytest.mark.parametrize("name", ["693_UNCI.dcm", "bad_sequence.dcm", "explicit_VR-UN.dcm"])
def test_head_neck_and_abdomen_ct_have_almost_no_lung_field(name: str) -> None:
    assert decode(REAL_DATA / name).lung_field_fraction < 0.05


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("MR2_J2KR.dcm", "not_ct"),
        ("RG1_J2KI.dcm", "not_ct"),
        ("US1_UNCR.dcm", "not_ct"),
        ("eCT_Supplemental.dcm", "volume_not_supported"),
        ("OT-PAL-8-face.dcm", "unsupported_media_type"),
    ],
)
def test_valid_dicom_that_is_not_one_ct_slice_is_refused(name: str, code: str) -> None:
    with pytest.raises(ImageRejected) as refused:
        decode(REAL_DATA / name)
    assert refused.value.code == code and refused.value.status in (415, 422)


def test_colour_ct_photometric_is_refused() -> None:
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dataset.PhotometricInterpretation = "RGB"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    with pytest.raises(ImageRejected) as refused:
        decode_slice(buffer.getvalue(), WINDOW, LIMIT)
    assert refused.value.code == "unsupported_photometric"


def test_truncated_dicom_is_a_clear_refusal() -> None:
    data = (REAL_DATA / "693_UNCI.dcm").read_bytes()
    with pytest.raises(ImageRejected) as refused:
        decode_slice(data[: len(data) // 2], WINDOW, LIMIT)
    assert refused.value.status == 422


def test_oversized_and_foreign_files_are_refused() -> None:
    data = (REAL_DATA / "693_UNCI.dcm").read_bytes()
    with pytest.raises(ImageRejected) as refused:
        decode_slice(data, WINDOW, 1024)
    assert (refused.value.status, refused.value.code) == (413, "image_too_large")
    with pytest.raises(ImageRejected) as refused:
        decode_slice(b"%PDF-1.7 not an image", WINDOW, LIMIT)
    assert refused.value.status == 415


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_grayscale_png_is_read_as_an_already_windowed_slice() -> None:
    pixels = np.tile(np.arange(256, dtype=np.uint8), (128, 1))
    decoded = decode_slice(_png(pixels), WINDOW, LIMIT)
    assert decoded.source_format == "png" and decoded.identifiers == {}
    np.testing.assert_allclose(decoded.windowed[0], np.arange(256) / 255, atol=1e-6)


def test_colour_png_is_refused_but_gray_saved_as_rgb_is_read() -> None:
    gray = np.random.default_rng(0).integers(0, 255, (96, 96), dtype=np.uint8)
    assert decode_slice(_png(np.dstack([gray] * 3)), WINDOW, LIMIT).windowed.shape == (96, 96)
    colour = np.dstack([gray, 255 - gray, gray])
    with pytest.raises(ImageRejected) as refused:
        decode_slice(_png(colour), WINDOW, LIMIT)
    assert refused.value.code == "unsupported_photometric"


def test_tiny_images_are_refused() -> None:
    with pytest.raises(ImageRejected) as refused:
        decode_slice(_png(np.zeros((20, 20), dtype=np.uint8)), WINDOW, LIMIT)
    assert refused.value.code == "unsupported_size"


def test_pydicom_warnings_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """bad_sequence.dcm holds malformed UIDs that pydicom would quote in warnings."""
    with caplog.at_level(logging.DEBUG):
        decoded = decode(REAL_DATA / "bad_sequence.dcm")
    uid = decoded.identifiers["StudyInstanceUID"]
    assert uid not in caplog.text


def test_model_input_resizes_to_a_single_channel_square() -> None:
    windowed = np.random.default_rng(1).random((512, 512), dtype=np.float32)
    image = model_input(windowed, 224)
    assert image.shape == (224, 224, 1) and image.dtype == np.float32
    assert abs(float(image.mean()) - float(windowed.mean())) < 0.01


def _slices(patients_per_class: tuple[int, int], per_patient: int) -> SliceSet:
    labels, patients = [], []
    for label, count in enumerate(patients_per_class):
        for patient in range(count):
            labels += [label] * per_patient
            patients += [f"{label}/p{patient}"] * per_patient
    n = len(labels)
    images = np.random.default_rng(2).random((n, 32, 32, 1), dtype=np.float32)
    return SliceSet(images, np.array(labels), np.array(patients), ("nsip", "uip"))


def test_patient_level_split_keeps_each_patient_in_one_split() -> None:
    slices = _slices((10, 4), 5)
    train, validation, test = split_by_patient(slices, (0.6, 0.2, 0.2), seed=3)
    groups = [set(s.patients.tolist()) for s in (train, validation, test)]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert sum(len(s) for s in (train, validation, test)) == len(slices)
    for split in (train, validation, test):  # stratified: both classes everywhere
        assert set(split.labels.tolist()) == {0, 1}


def test_split_refuses_a_class_with_too_few_patients() -> None:
    with pytest.raises(ValueError, match="needs at least 3"):
        split_by_patient(_slices((5, 2), 3), (0.6, 0.2, 0.2), seed=0)


def test_undersampling_balances_classes() -> None:
    balanced = undersample(_slices((10, 4), 5), seed=0)
    assert balanced.class_counts() == {"nsip": 20, "uip": 20}


def test_augmentation_adds_transformed_copies_deterministically() -> None:
    slices = _slices((3, 3), 2)
    first = augment(slices, Augmentation(copies=3), seed=5)
    again = augment(slices, Augmentation(copies=3), seed=5)
    assert len(first) == 4 * len(slices)
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.images[: len(slices)], slices.images)
    copies = first.images[len(slices) :]
    assert not np.allclose(copies[: len(slices)], slices.images)
    assert first.class_counts() == {"nsip": 24, "uip": 24}


@pytest.mark.parametrize("slope", ["abc", "nan", "0"])
def test_unusable_rescale_slope_is_a_clear_refusal(slope: str, tmp_path: Path) -> None:
    dataset = pydicom.dcmread(REAL_DATA / "693_UNCI.dcm")
    dataset.RescaleSlope = "7.77777"  # placeholder of the same even length, patched below
    path = tmp_path / "bad.dcm"
    dataset.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    assert raw.count(b"7.77777 ") == 1
    path.write_bytes(raw.replace(b"7.77777 ", slope.encode().ljust(8)))  # as a broken writer
    with pytest.raises(ImageRejected) as refused:
        decode(path)
    assert (refused.value.status, refused.value.code) == (422, "invalid_rescale")
