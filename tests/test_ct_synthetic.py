"""Synthetic chest CT: determinism, the DICOM contract, the anatomy and the NSIP/UIP patterns.

Pattern checks use the renderer's own lung mask (ground truth) and compare the classes on the
same slice positions, so they fail if a pattern is missing, misplaced or given to the wrong class.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydantic import ValidationError
from pydicom.pixels import apply_rescale
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless
from scipy import ndimage

from medserve.ct import synthetic
from medserve.ct.synthetic import (
    LABELS,
    SUBPLEURAL_SPARING,
    CtSlice,
    SyntheticCtConfig,
    cache_key,
    draw_anatomy,
    load_or_generate,
    patient_rngs,
    render_slice,
    slice_meta,
    synthetic_slice,
    window_to_uint8,
    write_dataset,
    write_png_slice,
    write_slice,
)

SMALL = SyntheticCtConfig(seed=3, nsip_patients=2, uip_patients=1, slices_per_patient=2, size=64)
TINY = SyntheticCtConfig(seed=5, nsip_patients=1, uip_patients=1, slices_per_patient=1, size=64)

# Pattern checks: large enough for cysts (~4 px radius) and the spared rim (~5 px) to resolve.
PATTERN_SIZE = 256
PATTERN_PATIENTS = (1, 2, 3)
APEX, MID, BASAL = 0.05, 0.5, (0.85, 0.95)
Z_POSITIONS = (APEX, MID, *BASAL)
EDGE_PX = 2  # the outermost lung pixels are blurred with the chest wall (partial volume)

GROUND_GLASS_HU = (-700, -400)
RETICULATION_HU = (-350, -50)
CYST_MAX_HU = -930
NORMAL_HU = (-750, -930)  # smoothed lung outside this range counts as abnormal
SUBPLEURAL_DEPTH = 0.08  # relative units (~14 mm): where UIP's reticulation lives


Cases = dict[tuple[str, int, float], CtSlice]


@pytest.fixture(scope="module")
def cases() -> Cases:
    """Slices of three patients per class at the apex, mid-level and two basal levels."""
    config = SyntheticCtConfig(size=PATTERN_SIZE)
    rendered = {}
    for label in LABELS:
        for number in PATTERN_PATIENTS:
            anatomy_rng, _ = patient_rngs(config, label, number)
            anatomy = draw_anatomy(label, anatomy_rng)
            for index, z in enumerate(Z_POSITIONS):
                rng = np.random.default_rng([number, index])
                rendered[label, number, z] = render_slice(anatomy, z, PATTERN_SIZE, rng)
    return rendered


def _slices(cases: Cases, label: str, zs: tuple[float, ...]) -> list[CtSlice]:
    return [cases[label, number, z] for number in PATTERN_PATIENTS for z in zs]


def _core(ct: CtSlice) -> np.ndarray:
    return ndimage.binary_erosion(ct.lung, iterations=EDGE_PX)


def _posterior(mask: np.ndarray) -> np.ndarray:
    """The part of `mask` below (posterior to) its centroid row."""
    rows = np.arange(mask.shape[0])[:, np.newaxis]
    return mask & (rows > np.nonzero(mask)[0].mean())


def _fraction(values: np.ndarray, low: float, high: float) -> float:
    return float(np.mean((values >= low) & (values <= high)))


def _denoised(ct: CtSlice) -> np.ndarray:
    # A 3x3 median removes pixel noise but keeps cysts and lines a few pixels across.
    return ndimage.median_filter(ct.hu.astype(np.float32), size=3)


def _abnormal(ct: CtSlice, mask: np.ndarray) -> float:
    smooth = _denoised(ct)[mask]
    return float(np.mean((smooth > NORMAL_HU[0]) | (smooth < NORMAL_HU[1])))


def _pleural_depth_px(ct: CtSlice) -> np.ndarray:
    return ndimage.distance_transform_edt(ct.lung)


def _relative_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.dcm"))}


# --- determinism, layout, files ------------------------------------------------------------------


def test_same_config_writes_byte_identical_files(tmp_path: Path) -> None:
    write_dataset(SMALL, tmp_path / "a")
    write_dataset(SMALL, tmp_path / "b")
    first, second = _relative_files(tmp_path / "a"), _relative_files(tmp_path / "b")
    assert first == second
    write_dataset(SMALL.model_copy(update={"seed": 4}), tmp_path / "c")
    other = _relative_files(tmp_path / "c")
    assert other.keys() == first.keys()
    assert all(other[name] != first[name] for name in first)


def test_folder_layout(tmp_path: Path) -> None:
    paths = write_dataset(SMALL, tmp_path)
    expected = [
        f"{label}/SYN-{label.upper()}-{number:03d}/{index:03d}.dcm"
        for label, count in (("nsip", 2), ("uip", 1))
        for number in range(1, count + 1)
        for index in range(SMALL.slices_per_patient)
    ]
    assert [str(p.relative_to(tmp_path)) for p in paths] == expected
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == (
        sorted(expected)
    )


def test_patients_do_not_depend_on_the_other_counts(tmp_path: Path) -> None:
    write_dataset(SMALL, tmp_path / "a")
    write_dataset(SMALL.model_copy(update={"nsip_patients": 1, "uip_patients": 2}), tmp_path / "b")
    first, second = _relative_files(tmp_path / "a"), _relative_files(tmp_path / "b")
    shared = first.keys() & second.keys()
    assert shared == {"nsip/SYN-NSIP-001/000.dcm", "nsip/SYN-NSIP-001/001.dcm"} | {
        "uip/SYN-UIP-001/000.dcm",
        "uip/SYN-UIP-001/001.dcm",
    }
    assert all(first[name] == second[name] for name in shared)


def test_dicom_tags_and_pixel_round_trip(tmp_path: Path) -> None:
    paths = write_dataset(SMALL, tmp_path)
    datasets = [pydicom.dcmread(path) for path in paths]
    for path, ds in zip(paths, datasets, strict=True):
        assert path.read_bytes()[128:132] == b"DICM"
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage == ds.SOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.Modality == "CT" and ds.BodyPartExamined == "CHEST"
        assert re.fullmatch(r"SYN-(NSIP|UIP)-\d{3}", ds.PatientID)
        assert re.fullmatch(r"Synthetic\^Patient\d{3}", str(ds.PatientName))
        assert (ds.Rows, ds.Columns, ds.SamplesPerPixel) == (SMALL.size, SMALL.size, 1)
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (
            16,
            12,
            11,
            0,
        )
        assert (ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType) == (-1024, 1, "HU")
        assert (ds.WindowCenter, ds.WindowWidth) == (-600, 1500)
        assert ds.SliceThickness == 1.0
        assert float(ds.PixelSpacing[0]) * SMALL.size == pytest.approx(350.0, abs=0.01)
        assert float(ds.ImagePositionPatient[2]) == float(ds.SliceLocation)
        assert int(ds.pixel_array.max()) <= 4095

    by_patient: dict[str, list[pydicom.Dataset]] = {}
    for ds in datasets:
        by_patient.setdefault(ds.PatientID, []).append(ds)
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    assert len({group[0].StudyInstanceUID for group in by_patient.values()}) == len(by_patient)
    for group in by_patient.values():
        assert len({(ds.StudyInstanceUID, ds.SeriesInstanceUID) for ds in group}) == 1
        assert [ds.InstanceNumber for ds in group] == [1, 2]
        # Apex first: slice locations run from head (higher z) to feet.
        assert float(group[0].SliceLocation) > float(group[1].SliceLocation)

    # The stored pixels decode to exactly the HU the renderer produced.
    anatomy_rng, slice_rngs = patient_rngs(SMALL, "uip", 1)
    anatomy = draw_anatomy("uip", anatomy_rng)
    expected = render_slice(anatomy, 0.25, SMALL.size, slice_rngs[0]).hu
    written = pydicom.dcmread(tmp_path / "uip" / "SYN-UIP-001" / "000.dcm")
    decoded = apply_rescale(written.pixel_array, written)
    assert np.abs(decoded - expected).max() < 1


def test_uids_are_deterministic_and_specific() -> None:
    meta = slice_meta(SMALL, "nsip", 1, 0)
    assert meta == slice_meta(SMALL, "nsip", 1, 0)
    assert meta.sop_uid != slice_meta(SMALL, "nsip", 1, 1).sop_uid
    assert meta.study_uid == slice_meta(SMALL, "nsip", 1, 1).study_uid
    assert meta.study_uid != slice_meta(SMALL, "uip", 1, 0).study_uid
    assert meta.sop_uid != slice_meta(SMALL.model_copy(update={"seed": 4}), "nsip", 1, 0).sop_uid
    assert meta.sop_uid != slice_meta(SMALL.model_copy(update={"size": 128}), "nsip", 1, 0).sop_uid


def test_rle_compressed_slice_decodes_to_the_same_pixels(tmp_path: Path) -> None:
    hu = synthetic_slice("uip", 0.9, patient_rng_seed=11, size=96)
    meta = slice_meta(SMALL, "uip", 1, 0)
    plain = pydicom.dcmread(write_slice(tmp_path / "plain.dcm", hu, meta))
    packed_path = write_slice(tmp_path / "rle.dcm", hu, meta, compressed=True)
    packed = pydicom.dcmread(packed_path)
    assert packed.file_meta.TransferSyntaxUID == RLELossless
    assert packed.SOPInstanceUID == plain.SOPInstanceUID
    assert packed_path.stat().st_size < (tmp_path / "plain.dcm").stat().st_size
    np.testing.assert_array_equal(packed.pixel_array, plain.pixel_array)
    np.testing.assert_array_equal(apply_rescale(packed.pixel_array, packed), hu)


def test_compressed_dataset_uses_rle(tmp_path: Path) -> None:
    paths = write_dataset(TINY.model_copy(update={"compressed": True}), tmp_path / "rle")
    plain = write_dataset(TINY, tmp_path / "plain")
    for packed_path, plain_path in zip(paths, plain, strict=True):
        packed, reference = pydicom.dcmread(packed_path), pydicom.dcmread(plain_path)
        assert packed.file_meta.TransferSyntaxUID == RLELossless
        np.testing.assert_array_equal(packed.pixel_array, reference.pixel_array)


def test_load_or_generate_writes_once_into_the_keyed_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = load_or_generate(TINY, tmp_path)
    assert folder == tmp_path / cache_key(TINY)
    assert re.fullmatch(r"[0-9a-f]{16}", folder.name)
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temporary left behind
    assert len(list(folder.rglob("*.dcm"))) == 2

    def fail(*_: object) -> None:
        raise AssertionError("the cached dataset was generated again")

    monkeypatch.setattr(synthetic, "write_dataset", fail)
    assert load_or_generate(TINY, tmp_path) == folder
    assert cache_key(TINY.model_copy(update={"seed": 6})) != folder.name


def test_interrupted_generation_leaves_no_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = synthetic.write_dataset

    def crash(config: SyntheticCtConfig, root: Path) -> list[Path]:
        real_write(config.model_copy(update={"uip_patients": 0}), root)
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "write_dataset", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        load_or_generate(TINY, tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(synthetic, "write_dataset", real_write)
    assert len(list(load_or_generate(TINY, tmp_path).rglob("*.dcm"))) == 2


def test_png_slice_is_the_lung_window(tmp_path: Path) -> None:
    hu = synthetic_slice("nsip", 0.5, patient_rng_seed=2, size=64)
    path = write_png_slice(tmp_path / "slice.png", hu)
    with Image.open(path) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "L", (64, 64))
        pixels = np.asarray(image)
    np.testing.assert_array_equal(pixels, window_to_uint8(hu))
    # Air (-1000 HU) sits at (-1000 - (-1350)) / 1500 of the way from black to white.
    assert abs(int(np.median(pixels[:4, :4])) - round(350 / 1500 * 255)) <= 4
    edges = window_to_uint8(np.array([-1350, 150], dtype=np.int16))
    assert edges.tolist() == [0, 255]


def test_config_limits_and_convenience_slice() -> None:
    with pytest.raises(ValidationError):
        SyntheticCtConfig(size=63)
    with pytest.raises(ValidationError):
        SyntheticCtConfig(size=513)
    default = SyntheticCtConfig()
    assert (default.seed, default.nsip_patients, default.uip_patients) == (7, 6, 6)
    assert (default.slices_per_patient, default.size, default.compressed) == (10, 256, False)
    for size in (64, 512):
        hu = synthetic_slice("uip", 0.7, patient_rng_seed=1, size=size)
        assert hu.dtype == np.int16 and hu.shape == (size, size)
        assert int(hu.min()) >= -1024 and int(hu.max()) <= 3071
    np.testing.assert_array_equal(
        synthetic_slice("nsip", 0.3, 4, 64), synthetic_slice("nsip", 0.3, 4, 64)
    )
    with pytest.raises(ValueError, match="unknown label"):
        synthetic_slice("normal", 0.3, 4, 64)  # type: ignore[arg-type]


# --- anatomy -------------------------------------------------------------------------------------


def _body(ct: CtSlice) -> np.ndarray:
    return ndimage.binary_fill_holes(ct.hu > -400)


def test_two_lungs_fill_a_plausible_share_of_the_body(cases: Cases) -> None:
    for (_, _, z), ct in cases.items():
        labelled, count = ndimage.label(ct.lung)
        assert count == 2
        columns = [np.nonzero(labelled == i)[1].mean() for i in (1, 2)]
        assert min(columns) < PATTERN_SIZE / 2 < max(columns)  # one lung each side
        share = ct.lung.sum() / _body(ct).sum()
        assert (0.15 if z == APEX else 0.35) < share < 0.6
    for label in LABELS:
        for number in PATTERN_PATIENTS:
            apex, base = cases[label, number, APEX], cases[label, number, BASAL[1]]
            assert base.lung.sum() > 1.5 * apex.lung.sum()  # the lungs grow towards the base


def test_geometry_is_relative_so_every_size_looks_alike() -> None:
    anatomy = draw_anatomy("nsip", np.random.default_rng(21))
    shares = []
    for size in (64, 128, 256):
        ct = render_slice(anatomy, 0.6, size, np.random.default_rng(1))
        shares.append(ct.lung.sum() / _body(ct).sum())
    assert max(shares) - min(shares) < 0.03


def test_spine_is_posterior_midline_and_air_outside(cases: Cases) -> None:
    for ct in cases.values():
        rows, cols = np.nonzero(ct.hu > 400)
        body_rows = np.nonzero(_body(ct))[0]
        assert rows.mean() > body_rows.mean() + 0.05 * PATTERN_SIZE  # bone lies posteriorly
        assert abs(cols.mean() - PATTERN_SIZE / 2) < 0.06 * PATTERN_SIZE
        assert abs(np.median(ct.hu[:8, :8]) + 1000) < 30


def test_apical_anterior_lung_is_near_normal_density(cases: Cases) -> None:
    for label in LABELS:
        for number in PATTERN_PATIENTS:
            ct = cases[label, number, APEX]
            region = ~_posterior(_core(ct)) & _core(ct)
            values = ct.hu[region]
            assert -880 < np.median(values) < -835
            assert -880 < values.mean() < -780  # vessels pull the mean up a little


# --- disease patterns ----------------------------------------------------------------------------


def _mean(values: list[float]) -> float:
    return float(np.mean(values))


def test_nsip_has_more_ground_glass_than_uip(cases: Cases) -> None:
    share = {
        label: _mean(
            [_fraction(ct.hu[_core(ct)], *GROUND_GLASS_HU) for ct in _slices(cases, label, BASAL)]
        )
        for label in LABELS
    }
    assert share["nsip"] > 0.25
    assert share["nsip"] > 1.4 * share["uip"]


def test_uip_has_clustered_honeycomb_cysts(cases: Cases) -> None:
    for label in LABELS:
        for ct in _slices(cases, label, BASAL):
            cysts = (_denoised(ct) < CYST_MAX_HU) & ct.lung
            share = cysts.sum() / ct.lung.sum()
            if label == "nsip":
                assert share < 0.002
                continue
            assert share > 0.008
            labelled, _ = ndimage.label(cysts)
            sizes = np.bincount(labelled.ravel())[1:]
            # Real cysts, several pixels each, many of them, not scattered noise pixels.
            assert (sizes >= 6).sum() >= 5
            assert sizes[sizes >= 6].sum() > 0.7 * cysts.sum()
            depth = _pleural_depth_px(ct)[cysts] * 2 / PATTERN_SIZE
            assert np.median(depth) < 0.1  # subpleural


def test_uip_has_more_subpleural_reticulation(cases: Cases) -> None:
    def share(ct: CtSlice) -> float:
        band = _core(ct) & (_pleural_depth_px(ct) < SUBPLEURAL_DEPTH * PATTERN_SIZE / 2)
        return _fraction(ct.hu[_posterior(band)], *RETICULATION_HU)

    nsip = _mean([share(ct) for ct in _slices(cases, "nsip", BASAL)])
    uip = _mean([share(ct) for ct in _slices(cases, "uip", BASAL)])
    assert uip > 0.05
    assert uip > 2 * nsip


def test_disease_is_posterior_and_basal(cases: Cases) -> None:
    for label in LABELS:
        posterior, anterior = [], []
        for ct in _slices(cases, label, BASAL):
            core = _core(ct)
            back = _posterior(core)
            posterior.append(_abnormal(ct, back))
            anterior.append(_abnormal(ct, core & ~back))
        assert _mean(posterior) > 1.4 * _mean(anterior), label
        basal = _mean([_abnormal(ct, _core(ct)) for ct in _slices(cases, label, BASAL)])
        apical = _mean([_abnormal(ct, _core(ct)) for ct in _slices(cases, label, (APEX,))])
        assert basal > 2 * apical, label


def test_nsip_spares_the_subpleural_rim_and_uip_does_not(cases: Cases) -> None:
    """Share of abnormal pixels in the outermost posterior rim vs the band just inside it."""
    rim_px = SUBPLEURAL_SPARING * PATTERN_SIZE / 2
    shares: dict[str, list[tuple[float, float]]] = {label: [] for label in LABELS}
    for label in LABELS:
        for ct in _slices(cases, label, BASAL):
            depth = _pleural_depth_px(ct)
            back = _posterior(ct.lung)
            rim = back & (depth > EDGE_PX) & (depth <= rim_px)
            inner = back & (depth > 1.8 * rim_px) & (depth <= 3.5 * rim_px)
            # Raw pixels: a median filter would mix the chest wall into the rim.
            hu = ct.hu
            rim_share, inner_share = (
                float(np.mean((hu[m] > NORMAL_HU[0]) | (hu[m] < NORMAL_HU[1])))
                for m in (rim, inner)
            )
            shares[label].append((rim_share, inner_share))
    for rim_share, inner_share in shares["nsip"]:
        assert rim_share < 0.25
        assert rim_share < 0.5 * inner_share
    uip_rim, uip_inner = np.mean(shares["uip"], axis=0)
    assert uip_rim >= uip_inner  # UIP starts right at the pleura
    assert uip_rim > 3 * np.mean(shares["nsip"], axis=0)[0]
