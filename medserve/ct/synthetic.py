"""Deterministic synthetic chest CT slices (NSIP vs UIP) written as real DICOM files.

No real lung CT is available offline, so the platform trains on these. Each patient is a
`PatientAnatomy` drawn once from a per-patient RNG (body and lung size/shape, shift, rotation,
noise, severity, vessel pattern, 3-D patchiness of the disease); `render_slice` draws one axial
slice at a position z in [0, 1] from the lung apex (0) to the base (1):

* anatomy in HU: air, body with a subcutaneous fat rim, chest wall with ribs, mediastinum with
  fat, heart, aorta, trachea/bronchi, vertebra (cortical rim, cancellous core, canal, arch) and
  two lungs (~ -860 HU, fine texture, vessels denser near the hilum);
* disease, scaled by severity and growing towards posterior (dorsal) and basal regions:
  NSIP = patchy ground glass with a spared subpleural rim; UIP = subpleural coarse reticulation
  (a Voronoi network of thin lines) and honeycomb cysts stacked in rows under the pleura, with
  little ground glass;
* mild blur and correlated noise, clipped to [-1024, 3071] HU, int16.

Geometry is drawn in relative coordinates (half the field of view = 1; row 0 anterior, column 0
the patient's right as in radiological display), so every `size` from 64 to 512 looks alike.
`write_dataset` lays out `<root>/<label>/<patient_id>/<slice:03d>.dcm` (CT Image Storage, 12-bit
stored, rescale intercept -1024, optionally RLE Lossless); the same config gives byte-identical
files, UIDs included.

Timing (2-core VM shared with another job, one process): the default config (12 patients x 10
slices at 256 px) takes ~5 s of CPU, ~40 ms per slice to render and ~7 ms to write; RLE costs
about the same and shrinks the files from 16 to 9.5 MB.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless, generate_uid
from scipy import ndimage
from scipy.spatial import KDTree

Label = Literal["nsip", "uip"]
LABELS: tuple[Label, ...] = ("nsip", "uip")

# Part of the cache key: bump whenever the files for a given config change.
GENERATOR_VERSION = 1

# --- Hounsfield units ----------------------------------------------------------------------------
HU_MIN, HU_MAX = -1024, 3071  # the 12-bit range that `RESCALE_INTERCEPT` maps stored values to
AIR_HU = -1000.0
FAT_HU = -100.0
SOFT_TISSUE_HU = 40.0
BLOOD_HU = 40.0
CSF_HU = 15.0
CORTICAL_BONE_HU = 700.0
CANCELLOUS_BONE_HU = 250.0
LUNG_HU = -860.0
VESSEL_HU = 40.0
RETICULATION_HU = -100.0  # line core: partial volume and blur leave ~ -350..-150
CYST_HU = -970.0
CYST_WALL_HU = -100.0
GROUND_GLASS_HU = (-620.0, -480.0)  # per patient: what fully developed ground glass reaches

# --- DICOM ---------------------------------------------------------------------------------------
FIELD_OF_VIEW_MM = 350.0
SLICE_THICKNESS_MM = 1.0
# Apex-to-base distance; slices are HRCT-like: thin, spread over the whole lung height.
LUNG_HEIGHT_MM = 240.0
RESCALE_INTERCEPT = HU_MIN
STORED_MAX = 4095  # 12 bits stored
WINDOW_CENTER = -600.0
WINDOW_WIDTH = 1500.0
UID_NAMESPACE = "medserve-synthetic-ct"
STUDY_DATE = "20240101"  # fixed so files stay byte-identical across runs

# --- relative geometry (half the field of view = 1; +v is posterior) ----------------------------
BODY_CENTRE_V = 0.03
BODY_HALF_AXES = (0.86, 0.62)
BODY_SCALE = (0.90, 1.04)  # per-patient factor on the whole anatomy
BODY_EXPONENT = (2.1, 2.6)  # superellipse: >2 makes the trunk boxier
FAT_THICKNESS = (0.025, 0.07)
CHEST_WALL = 0.055  # muscle + ribs between the fat and the lungs
RIB_DEPTH = 0.03  # rib centres below the fat
RIB_HALF_AXES = (0.032, 0.012)
RIB_MARROW_HALF_AXES = (0.022, 0.006)
RIBS_PER_SIDE = 7
RIB_ANGLES_DEG = (-62.0, 72.0)  # from the lateral direction; no ribs at the sternum or spine
SHIFT = 0.03
ROTATION_DEG = 4.0

# The lung ellipse is a little larger than the thoracic cavity at full size, so the chest wall,
# mediastinum and heart shape the lungs as they do in a real chest.
LUNG_OFFSET_U = 0.42
LUNG_HALF_AXES = (0.36, 0.52)
LUNG_SCALE = (0.93, 1.05)
LUNG_CENTRE_V = -0.02
LUNG_SHEAR = 0.22  # the posterior lung reaches further medially (paravertebral gutters)
LUNG_RIPPLE = 0.045  # amplitude of per-patient boundary harmonics
LUNG_HARMONICS = 3
APEX_LUNG_SCALE = 0.6  # lung cross-section at z = 0 relative to the base
LUNG_FULL_Z = 0.7  # z from which the cross-section stops growing
APEX_POSTERIOR_SHIFT = 0.08  # apices sit posteriorly
MEDIASTINUM_HALF_WIDTH = 0.085
ORGAN_MARGIN = 0.02  # soft tissue kept between lungs and heart/aorta/spine

HEART_CENTRE = (0.1, -0.19)
HEART_HALF_AXES = (0.25, 0.18)
HEART_TILT_RAD = -0.6  # the long axis points to the patient's left and anteriorly
HEART_Z = (0.3, 0.8)  # the heart appears from, and is full size at, these z
HEART_SCALE = (0.9, 1.12)
PERICARDIAL_FAT = 0.018
MEDIASTINAL_FAT_CENTRE = (0.0, -0.08)
MEDIASTINAL_FAT_HALF_AXES = (0.14, 0.28)
ESOPHAGUS = (0.01, 0.17, 0.025)  # u, v, radius
# (u, v, radius, z from, z to): ascending aorta, pulmonary trunk, descending aorta.
MEDIASTINAL_VESSELS = (
    (-0.06, -0.12, 0.065, 0.2, 0.6),
    (0.08, -0.10, 0.06, 0.35, 0.55),
    (0.10, 0.18, 0.05, 0.12, 1.01),
)
TRACHEA = (0.0, 0.07, 0.055)  # u, v, radius
CARINA_Z = 0.4
MAIN_BRONCHI = (0.075, 0.08, 0.03, 0.55)  # |u|, v, radius, last z
VERTEBRA = (0.0, 0.30, 0.085)  # u, v, radius of the vertebral body
CORTEX = 0.018
SPINAL_CANAL = (0.0, 0.43, 0.04)
NEURAL_ARCH = (0.0, 0.43, 0.07)  # a bony ring around the canal
SPINOUS_PROCESS = (0.0, 0.51, 0.018, 0.045)  # u, v, half axes
SPINE_KEEP_OUT = (0.0, 0.38, 0.15, 0.2)  # the lungs never enter this ellipse
STERNUM = (0.0, -0.53, 0.06, 0.022, 0.15)  # u, v, half axes, from z

# --- lung texture and vessels --------------------------------------------------------------------
TEXTURE_HU = (10.0, 18.0)
TEXTURE_SCALE = 0.006  # correlation length of the parenchymal texture
NOISE_HU = (10.0, 30.0)
NOISE_GRAIN_PX = 0.6  # CT noise is slightly correlated
BLUR_PX = 0.6
# Counts per lung at full size (scaled by the lung's area at z). In-plane vessels are short:
# most run out of the slice, so the periphery shows short segments and dots, not long lines.
VESSEL_TRUNKS = (3, 5)
VESSEL_CHILDREN = 2  # side branches per trunk
VESSEL_SEGMENTS = (15, 28)
VESSEL_DOTS = (40, 70)
VESSEL_TRUNK_LENGTH = (0.35, 0.7)  # lung-frame units
VESSEL_SEGMENT_LENGTH = (0.02, 0.06)  # relative units
VESSEL_HILAR_RADIUS = 0.011
VESSEL_TIP_RADIUS = 0.0025  # ~1 mm peripheral vessels
VESSEL_REACH = 1.5  # lung-frame distance from the hilum where vessels reach the tip radius
HILAR_Z = (0.5, 0.3)  # level of the hila and how fast hilar calibre fades above and below
HILUM_LOCAL = (-0.62, 0.05)  # in lung-frame units (medial, just posterior of the centre)

# --- disease -------------------------------------------------------------------------------------
SEVERITY = (0.45, 1.0)
BASAL_FLOOR = 0.1  # share of the basal extent present at the apex
BASAL_POWER = 1.6
POSTERIOR_FLOOR = 0.15  # share of the posterior extent present anteriorly
PATCH_GRID = 10  # disease patches ~ 2 / PATCH_GRID across
PATCH_SLABS = 5  # along z: neighbouring slices share their patches
GG_GAIN = 2.0
GG_THRESHOLD = 0.3
GG_PATCH_WEIGHT = 0.8  # multiplies the extent: patches, yet nothing where there is no disease
GG_SOFTNESS = 0.4
GG_PERIPHERAL_DEPTH = 0.25  # NSIP is peripheral, but not the outermost rim:
SUBPLEURAL_SPARING = 0.04  # width of the spared rim (relative units, ~7 mm)
SPARING_RAMP = 1.8  # ground glass reaches full strength at this multiple of the rim
RETICULATION_CELL = (0.05, 0.07)  # coarse: 9-12 mm network cells
RETICULATION_WIDTH = 0.008  # ~1.4 mm: coarse lines, still thin
RETICULATION_DEPTH = 0.09  # reticulation fades inwards from the pleura over this depth
RETICULATION_GAIN = 3.0
CYST_RADIUS = (0.028, 0.04)  # 10-14 mm cysts, a few pixels even at 128 px
CYST_WALL = 0.005
CYST_ROWS = (0.2, 0.38, 0.55)  # extent needed for the first, second and third row of cysts
CYST_SEPARATION = 1.5  # minimum centre distance, in radii
CYST_OVERSAMPLE = 2.0
HONEYCOMB_CLUSTER = (-0.5, 0.5)  # patch values over which cyst clusters fade in


@dataclass(frozen=True)
class _Pattern:
    """How strongly each finding shows in one label."""

    ground_glass: float
    reticulation: float
    honeycomb: float
    spares_subpleural: bool


PATTERNS: dict[Label, _Pattern] = {
    # Fibrotic NSIP (the usual kind in scleroderma) has some fine reticulation inside the haze.
    "nsip": _Pattern(ground_glass=1.0, reticulation=0.12, honeycomb=0.0, spares_subpleural=True),
    "uip": _Pattern(ground_glass=0.1, reticulation=1.0, honeycomb=1.0, spares_subpleural=False),
}


class SyntheticCtConfig(BaseModel):
    """What to generate; the cache key of `load_or_generate`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 7
    # NSIP is 80-90 % of real cases; training undersamples, so both counts are free.
    nsip_patients: int = Field(default=6, ge=0)
    uip_patients: int = Field(default=6, ge=0)
    slices_per_patient: int = Field(default=10, ge=1)
    size: int = Field(default=256, ge=64, le=512)
    compressed: bool = False  # RLE Lossless instead of Explicit VR Little Endian


@dataclass(frozen=True, eq=False)
class PatientAnatomy:
    """One patient's fixed traits; `render_slice` draws any z from them."""

    label: Label
    severity: float
    body_scale: tuple[float, float]
    body_exponent: float
    fat_thickness: float
    shift: tuple[float, float]
    rotation: float  # radians
    lung_scale: tuple[float, float]
    lung_ripple: np.ndarray  # [2 lungs, LUNG_HARMONICS, 2]: amplitude, phase
    heart_scale: float
    texture_hu: float
    noise_hu: float
    ground_glass_hu: float
    cyst_radius: float
    reticulation_cell: float
    vessel_trunks: int
    vessel_segments: int
    vessel_dots: int
    patches: np.ndarray  # [2, PATCH_SLABS, PATCH_GRID, PATCH_GRID]: ground glass, honeycomb


@dataclass(frozen=True, eq=False)
class CtSlice:
    """A rendered slice with the ground truth the tests and callers may want."""

    hu: np.ndarray  # int16 [size, size]
    lung: np.ndarray  # bool [size, size], the lungs before disease
    z: float


class SliceMeta(BaseModel):
    """The identifying and geometric DICOM attributes of one slice."""

    model_config = ConfigDict(frozen=True)

    patient_id: str
    patient_name: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    sop_uid: str
    instance_number: int
    slice_location_mm: float
    pixel_spacing_mm: float


# --- patients ------------------------------------------------------------------------------------


def draw_anatomy(label: Label, rng: np.random.Generator) -> PatientAnatomy:
    """A random patient of the given label (every draw comes from `rng`, in a fixed order)."""
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}; expected one of {LABELS}")
    ripple = np.stack(
        [
            rng.uniform(0, LUNG_RIPPLE, (2, LUNG_HARMONICS)),
            rng.uniform(0, 2 * math.pi, (2, LUNG_HARMONICS)),
        ],
        axis=-1,
    )
    return PatientAnatomy(
        label=label,
        severity=float(rng.uniform(*SEVERITY)),
        body_scale=(float(rng.uniform(*BODY_SCALE)), float(rng.uniform(*BODY_SCALE))),
        body_exponent=float(rng.uniform(*BODY_EXPONENT)),
        fat_thickness=float(rng.uniform(*FAT_THICKNESS)),
        shift=(float(rng.uniform(-SHIFT, SHIFT)), float(rng.uniform(-SHIFT, SHIFT))),
        rotation=math.radians(float(rng.uniform(-ROTATION_DEG, ROTATION_DEG))),
        lung_scale=(float(rng.uniform(*LUNG_SCALE)), float(rng.uniform(*LUNG_SCALE))),
        lung_ripple=ripple,
        heart_scale=float(rng.uniform(*HEART_SCALE)),
        texture_hu=float(rng.uniform(*TEXTURE_HU)),
        noise_hu=float(rng.uniform(*NOISE_HU)),
        ground_glass_hu=float(rng.uniform(*GROUND_GLASS_HU)),
        cyst_radius=float(rng.uniform(*CYST_RADIUS)),
        reticulation_cell=float(rng.uniform(*RETICULATION_CELL)),
        vessel_trunks=int(rng.integers(*VESSEL_TRUNKS, endpoint=True)),
        vessel_segments=int(rng.integers(*VESSEL_SEGMENTS, endpoint=True)),
        vessel_dots=int(rng.integers(*VESSEL_DOTS, endpoint=True)),
        patches=rng.standard_normal((2, PATCH_SLABS, PATCH_GRID, PATCH_GRID)).astype(np.float32),
    )


def synthetic_slice(
    label: Label, z: float, patient_rng_seed: int, size: int, slice_seed: int = 0
) -> np.ndarray:
    """One int16 HU slice of the patient drawn from `patient_rng_seed` (a convenience wrapper)."""
    anatomy = draw_anatomy(label, np.random.default_rng(patient_rng_seed))
    rng = np.random.default_rng([patient_rng_seed, slice_seed])
    return render_slice(anatomy, z, size, rng).hu


def slice_positions(count: int) -> list[float]:
    """z of `count` evenly spread slices, apex (0) to base (1), never exactly at either end."""
    return [(index + 0.5) / count for index in range(count)]


# --- rendering -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """A window of the pixel grid in the patient's nominal coordinates, and the way back."""

    u: np.ndarray  # float32 [rows, cols], + towards the patient's left (image right)
    v: np.ndarray  # float32 [rows, cols], + posterior
    size: int  # of the whole image
    anatomy: PatientAnatomy
    origin: tuple[int, int] = (0, 0)  # of this window in the whole image

    @property
    def pixel(self) -> float:
        """Relative length of one pixel."""
        return 2.0 / self.size

    @property
    def shape(self) -> tuple[int, int]:
        return self.u.shape

    def crop(self, rows: slice, cols: slice) -> _Frame:
        """The window `rows` x `cols` of this (whole-image) frame."""
        origin = (rows.start, cols.start)
        return _Frame(self.u[rows, cols], self.v[rows, cols], self.size, self.anatomy, origin)

    def to_pixels(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows and columns (float, in this window) of nominal points."""
        a = self.anatomy
        c, s = math.cos(a.rotation), math.sin(a.rotation)
        x, y = u * a.body_scale[0], v * a.body_scale[1] + BODY_CENTRE_V
        cols = (c * x - s * y + a.shift[0] + 1.0) * self.size / 2 - 0.5 - self.origin[1]
        rows = (s * x + c * y + a.shift[1] + 1.0) * self.size / 2 - 0.5 - self.origin[0]
        return rows, cols


@dataclass(frozen=True)
class _Lung:
    """One lung's frame at a given z: centre, half axes and side (+1 = image right)."""

    centre: tuple[float, float]
    half_axes: tuple[float, float]
    side: int
    ripple: np.ndarray

    def local(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lung-frame coordinates: x lateral, y posterior, the boundary near radius 1."""
        x = (u - self.centre[0]) * self.side
        y = v - self.centre[1]
        return (x + LUNG_SHEAR * y) / self.half_axes[0], y / self.half_axes[1]

    def nominal(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of `local`."""
        v_offset = y * self.half_axes[1]
        u_offset = x * self.half_axes[0] - LUNG_SHEAR * v_offset
        return self.centre[0] + self.side * u_offset, self.centre[1] + v_offset


def render_slice(anatomy: PatientAnatomy, z: float, size: int, rng: np.random.Generator) -> CtSlice:
    """The patient's axial slice at z (0 apex .. 1 base), `size` x `size`, int16 HU."""
    if not 0.0 <= z <= 1.0:
        raise ValueError(f"z={z}: slice positions run from 0 (apex) to 1 (base)")
    frame = _frame(anatomy, size)
    hu = _body(frame, z)
    _bones(hu, frame, z, rng)
    lungs = _lungs(anatomy, z)
    lung, y_local = _lung_mask(frame, lungs, z)
    # The lungs' bounding box (plus a non-lung margin for the pleural distance) is all the
    # parenchyma needs: about half the image.
    rows, cols = _bounding_box(lung, margin=2)
    inside = lung[rows, cols]
    parenchyma = _parenchyma(frame.crop(rows, cols), lungs, inside, y_local[rows, cols], z, rng)
    hu[rows, cols][inside] = parenchyma[inside]
    hu = ndimage.gaussian_filter(hu, BLUR_PX)
    hu += _noise(rng, hu.shape, NOISE_GRAIN_PX, anatomy.noise_hu)
    pixels = np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)
    return CtSlice(hu=pixels, lung=lung, z=z)


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if len(rows) == 0:
        return slice(0, 0), slice(0, 0)
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, mask.shape[0])),
        slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, mask.shape[1])),
    )


def _frame(anatomy: PatientAnatomy, size: int) -> _Frame:
    centres = (np.arange(size, dtype=np.float32) + 0.5) * np.float32(2.0 / size) - 1
    x = centres[np.newaxis, :] - np.float32(anatomy.shift[0])
    y = centres[:, np.newaxis] - np.float32(anatomy.shift[1])
    c, s = np.float32(math.cos(anatomy.rotation)), np.float32(math.sin(anatomy.rotation))
    u = (c * x + s * y) / np.float32(anatomy.body_scale[0])
    v = (-s * x + c * y - np.float32(BODY_CENTRE_V)) / np.float32(anatomy.body_scale[1])
    return _Frame(u=u, v=v, size=size, anatomy=anatomy)


def _level(
    u: np.ndarray,
    v: np.ndarray,
    centre: tuple[float, float],
    half_axes: tuple[float, float],
    exponent: float = 2.0,
    tilt: float = 0.0,
) -> np.ndarray:
    """Superellipse level: < 1 inside."""
    du, dv = u - centre[0], v - centre[1]
    if tilt:
        c, s = math.cos(tilt), math.sin(tilt)
        du, dv = c * du + s * dv, -s * du + c * dv
    if exponent == 2.0:  # the common case; squaring is much cheaper than a float power
        return (du / half_axes[0]) ** 2 + (dv / half_axes[1]) ** 2
    return np.abs(du / half_axes[0]) ** exponent + np.abs(dv / half_axes[1]) ** exponent


def _disc(u: np.ndarray, v: np.ndarray, u0: float, v0: float, radius: float) -> np.ndarray:
    return (u - u0) ** 2 + (v - v0) ** 2 < radius**2


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _growth(z: float) -> float:
    """Lung cross-section scale at z: small apices, full size from LUNG_FULL_Z down."""
    ramp = float(_smoothstep(0.0, LUNG_FULL_Z, np.float32(z)))
    return APEX_LUNG_SCALE + (1.0 - APEX_LUNG_SCALE) * ramp


def _heart_scale(anatomy: PatientAnatomy, z: float) -> float:
    return anatomy.heart_scale * float(_smoothstep(*HEART_Z, np.float32(z)))


def _inner_half_axes(anatomy: PatientAnatomy, depth: float) -> tuple[float, float]:
    """Body half axes shrunk by the fat rim plus `depth`."""
    shrink = anatomy.fat_thickness + depth
    return BODY_HALF_AXES[0] - shrink, BODY_HALF_AXES[1] - shrink


def _body(frame: _Frame, z: float) -> np.ndarray:
    """Air, fat rim, soft tissue and the mediastinum (no bone, no lung yet)."""
    a, u, v = frame.anatomy, frame.u, frame.v
    hu = np.full(u.shape, AIR_HU, dtype=np.float32)
    hu[_level(u, v, (0, 0), BODY_HALF_AXES, a.body_exponent) < 1] = FAT_HU
    hu[_level(u, v, (0, 0), _inner_half_axes(a, 0.0), a.body_exponent) < 1] = SOFT_TISSUE_HU
    hu[_level(u, v, MEDIASTINAL_FAT_CENTRE, MEDIASTINAL_FAT_HALF_AXES) < 1] = FAT_HU
    hu[_disc(u, v, *ESOPHAGUS)] = SOFT_TISSUE_HU
    heart = _heart_scale(a, z)
    if heart > 0.05:
        fat_axes = tuple(h * heart + PERICARDIAL_FAT for h in HEART_HALF_AXES)
        hu[_level(u, v, HEART_CENTRE, fat_axes, tilt=HEART_TILT_RAD) < 1] = FAT_HU
        axes = tuple(h * heart for h in HEART_HALF_AXES)
        hu[_level(u, v, HEART_CENTRE, axes, tilt=HEART_TILT_RAD) < 1] = BLOOD_HU
    for u0, v0, radius, z_from, z_to in MEDIASTINAL_VESSELS:
        if z_from <= z < z_to:
            hu[_disc(u, v, u0, v0, radius)] = BLOOD_HU
    _airways(hu, u, v, z)
    return hu


def _airways(hu: np.ndarray, u: np.ndarray, v: np.ndarray, z: float) -> None:
    if z < CARINA_Z:
        hu[_disc(u, v, *TRACHEA)] = AIR_HU
    elif z < MAIN_BRONCHI[3]:
        offset, v0, radius, _ = MAIN_BRONCHI
        hu[_disc(u, v, -offset, v0, radius) | _disc(u, v, offset, v0, radius)] = AIR_HU


def _bones(hu: np.ndarray, frame: _Frame, z: float, rng: np.random.Generator) -> None:
    """Vertebra, sternum and ribs, drawn over the soft tissue."""
    u, v = frame.u, frame.v
    _bone(hu, _disc(u, v, *VERTEBRA), _disc(u, v, *VERTEBRA[:2], VERTEBRA[2] - CORTEX))
    arch = _disc(u, v, *NEURAL_ARCH)
    spinous = _level(u, v, SPINOUS_PROCESS[:2], SPINOUS_PROCESS[2:]) < 1
    hu[arch | spinous] = CORTICAL_BONE_HU
    hu[_disc(u, v, *SPINAL_CANAL)] = CSF_HU
    if z >= STERNUM[4]:
        axes = STERNUM[2:4]
        inner = (axes[0] - CORTEX / 2, axes[1] - CORTEX / 2)
        _bone(hu, _level(u, v, STERNUM[:2], axes) < 1, _level(u, v, STERNUM[:2], inner) < 1)
    _ribs(hu, frame, rng)


def _bone(hu: np.ndarray, outer: np.ndarray, inner: np.ndarray) -> None:
    hu[outer] = CORTICAL_BONE_HU
    hu[inner] = CANCELLOUS_BONE_HU


def _ribs(hu: np.ndarray, frame: _Frame, rng: np.random.Generator) -> None:
    """Rib cross-sections on an ellipse inside the chest wall; they move from slice to slice."""
    a = frame.anatomy
    half_axes = _inner_half_axes(a, RIB_DEPTH)
    low, high = np.radians(RIB_ANGLES_DEG)
    spacing = (high - low) / (RIBS_PER_SIDE - 1)
    base = np.linspace(low, high, RIBS_PER_SIDE)
    angles = base + rng.uniform(-0.3, 0.3, (2, RIBS_PER_SIDE)) * spacing
    # Only pixels near the rib ellipse can be rib: evaluate there, not on the whole image.
    ring = np.abs(_level(frame.u, frame.v, (0, 0), half_axes, a.body_exponent) - 1) < 0.15
    rows, cols = np.nonzero(ring)
    ru, rv = frame.u[rows, cols], frame.v[rows, cols]
    for side_index, side in enumerate((-1.0, 1.0)):
        for angle in angles[side_index]:
            cu, cv = side * half_axes[0] * math.cos(angle), half_axes[1] * math.sin(angle)
            # Ribs are cut obliquely: their long axis follows the chest wall.
            tilt = math.atan2(
                half_axes[1] * math.cos(angle), -side * half_axes[0] * math.sin(angle)
            )
            outer = _level(ru, rv, (cu, cv), RIB_HALF_AXES, tilt=tilt) < 1
            inner = _level(ru, rv, (cu, cv), RIB_MARROW_HALF_AXES, tilt=tilt) < 1
            hu[rows[outer], cols[outer]] = CORTICAL_BONE_HU
            hu[rows[inner], cols[inner]] = CANCELLOUS_BONE_HU


def _lungs(anatomy: PatientAnatomy, z: float) -> tuple[_Lung, _Lung]:
    growth = _growth(z)
    # The lungs also move apart as they grow, keeping the mediastinum between them.
    offset = LUNG_OFFSET_U * (0.75 + 0.25 * growth)
    centre_v = LUNG_CENTRE_V + APEX_POSTERIOR_SHIFT * (1 - growth) / (1 - APEX_LUNG_SCALE)
    half_axes = (
        LUNG_HALF_AXES[0] * anatomy.lung_scale[0] * growth,
        LUNG_HALF_AXES[1] * anatomy.lung_scale[1] * growth,
    )
    return (
        _Lung((-offset, centre_v), half_axes, -1, anatomy.lung_ripple[0]),
        _Lung((offset, centre_v), half_axes, 1, anatomy.lung_ripple[1]),
    )


def _lung_mask(frame: _Frame, lungs: tuple[_Lung, _Lung], z: float) -> tuple[np.ndarray, ...]:
    """Both lungs (bool) and each pixel's lung-frame y (-1 anterior edge .. +1 posterior)."""
    u, v, a = frame.u, frame.v, frame.anatomy
    allowed = _level(u, v, (0, 0), _inner_half_axes(a, CHEST_WALL), a.body_exponent) < 1
    allowed &= _level(u, v, SPINE_KEEP_OUT[:2], SPINE_KEEP_OUT[2:]) >= 1
    heart = _heart_scale(a, z)
    if heart > 0.05:
        axes = tuple(h * heart + PERICARDIAL_FAT + ORGAN_MARGIN for h in HEART_HALF_AXES)
        allowed &= _level(u, v, HEART_CENTRE, axes, tilt=HEART_TILT_RAD) >= 1
    for u0, v0, radius, z_from, z_to in MEDIASTINAL_VESSELS:
        if z_from <= z < z_to:
            allowed &= ~_disc(u, v, u0, v0, radius + ORGAN_MARGIN)
    mask = np.zeros(u.shape, dtype=bool)
    y_local = np.zeros(u.shape, dtype=np.float32)
    for lung in lungs:
        x, y = lung.local(u, v)
        radius2 = x * x + y * y
        amplitude, phase = lung.ripple[:, 0], lung.ripple[:, 1]
        # The rippled boundary is only evaluated where it can matter (a fraction of the image).
        rows, cols = np.nonzero(
            (radius2 < (1 + amplitude.sum()) ** 2)
            & (u * lung.side > MEDIASTINUM_HALF_WIDTH)
            & allowed
        )
        theta = np.arctan2(y[rows, cols], x[rows, cols])
        boundary = 1 + sum(
            amplitude[k] * np.cos((k + 2) * theta + phase[k]) for k in range(LUNG_HARMONICS)
        )
        keep = radius2[rows, cols] < boundary**2
        rows, cols = rows[keep], cols[keep]
        mask[rows, cols] = True
        y_local[rows, cols] = y[rows, cols]
    return mask, y_local


def _parenchyma(
    frame: _Frame,
    lungs: tuple[_Lung, _Lung],
    lung: np.ndarray,
    y_local: np.ndarray,
    z: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Lung HU everywhere (only read inside `lung`): texture, disease, vessels."""
    a = frame.anatomy
    pattern = PATTERNS[a.label]
    sigma = max(0.5, TEXTURE_SCALE * frame.size / 2)
    hu = LUNG_HU + _noise(rng, frame.shape, sigma, a.texture_hu)
    depth = ndimage.distance_transform_edt(lung).astype(np.float32) * np.float32(frame.pixel)
    extent = _extent(a.severity, z, y_local) * lung
    gg_patch = _patch_field(a.patches[0], z, frame)
    glass = _ground_glass(extent, depth, gg_patch, pattern) * pattern.ground_glass
    hu += glass * (a.ground_glass_hu - hu)
    if pattern.reticulation > 0:
        _reticulation(hu, frame, extent * pattern.reticulation, depth, gg_patch, rng)
    vessels = _vessels(frame, lungs, z, rng)
    hu += vessels * (VESSEL_HU - hu)
    # Honeycombing replaces the lung: no vessels run through the cysts.
    if pattern.honeycomb > 0:
        cluster = _smoothstep(*HONEYCOMB_CLUSTER, _patch_field(a.patches[1], z, frame))
        _honeycomb(hu, frame, lung, extent * cluster * pattern.honeycomb, depth, rng)
    return hu


def _noise(
    rng: np.random.Generator, shape: tuple[int, ...], sigma_px: float, std_hu: float
) -> np.ndarray:
    """Gaussian-correlated noise with the given standard deviation."""
    white = rng.standard_normal(shape, dtype=np.float32)
    grain = ndimage.gaussian_filter(white, sigma_px)
    return grain * np.float32(std_hu / max(float(grain.std()), 1e-6))


def _patch_field(slabs: np.ndarray, z: float, frame: _Frame) -> np.ndarray:
    """Smooth ~N(0, 1) field at z, interpolated between the patient's slabs so it drifts
    gradually from slice to slice."""
    position = z * (len(slabs) - 1)
    low = min(int(position), len(slabs) - 2)
    w = position - low
    # Dividing by the norm of the weights keeps the variance of the blend at 1.
    slab = ((1 - w) * slabs[low] + w * slabs[low + 1]) / math.hypot(1 - w, w)
    weights, transposed = _upsampling_matrices(slabs.shape[-1], frame.size)
    (top, left), (height, width) = frame.origin, frame.shape
    rows, cols = weights[top : top + height], transposed[:, left : left + width]
    return (rows @ slab.astype(np.float32)) @ np.ascontiguousarray(cols)


@functools.lru_cache(maxsize=8)
def _upsampling_matrices(cells: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """W [size, cells] and W.T, cubic-spline interpolation: spline zoom is linear and separable,
    so W @ grid @ W.T equals `ndimage.zoom(grid)` at a fraction of its cost."""
    identity = np.eye(cells, dtype=np.float64)
    weights = ndimage.zoom(identity, (size / cells, 1), order=3, mode="grid-mirror", grid_mode=True)
    # float32 and a contiguous transpose: OpenBLAS is ~100x slower on the float64 or strided forms.
    weights = weights.astype(np.float32)
    transposed = np.ascontiguousarray(weights.T)
    weights.setflags(write=False)
    transposed.setflags(write=False)
    return weights, transposed


def _extent(severity: float, z: float, y_local: np.ndarray) -> np.ndarray:
    """How far disease has progressed at each pixel: posterior and basal first."""
    basal = BASAL_FLOOR + (1 - BASAL_FLOOR) * z**BASAL_POWER
    posterior = POSTERIOR_FLOOR + (1 - POSTERIOR_FLOOR) * _smoothstep(-0.7, 0.7, y_local)
    return (severity * basal * posterior).astype(np.float32)


def _ground_glass(
    extent: np.ndarray, depth: np.ndarray, patch: np.ndarray, pattern: _Pattern
) -> np.ndarray:
    """Share of the way to full ground glass (0..1): patchy, peripheral, optionally spared."""
    peripheral = 0.5 + 0.5 * np.exp(-depth / GG_PERIPHERAL_DEPTH)
    drive = extent * peripheral * GG_GAIN * (1 + GG_PATCH_WEIGHT * patch) - GG_THRESHOLD
    amount = _smoothstep(0.0, GG_SOFTNESS, drive)
    if pattern.spares_subpleural:
        amount *= _smoothstep(SUBPLEURAL_SPARING, SUBPLEURAL_SPARING * SPARING_RAMP, depth)
    return amount


def _line_profile(distance: np.ndarray, width: float, pixel: float) -> np.ndarray:
    """Intensity of a line of `width` at `distance` from its centre, anti-aliased: lines thinner
    than a pixel get wider and fainter instead of vanishing or aliasing."""
    drawn = max(width, 0.6 * pixel)
    return (width / drawn) * np.exp(-((distance / drawn) ** 2))


def _bisector_distance(
    points: np.ndarray, seeds: np.ndarray, distances: np.ndarray, nearest: np.ndarray
) -> np.ndarray:
    """Distance from each point to the Voronoi edge between its two nearest seeds."""
    gap = np.linalg.norm(seeds[nearest[:, 1]] - seeds[nearest[:, 0]], axis=1)
    return (distances[:, 1] ** 2 - distances[:, 0] ** 2) / (2 * np.maximum(gap, 1e-9))


def _jittered_grid(cell: float, rng: np.random.Generator) -> np.ndarray:
    """Seeds about `cell` apart over the whole frame (irregular, but never clumped)."""
    ticks = np.arange(-1.3, 1.3, cell)
    grid = np.stack(np.meshgrid(ticks, ticks), axis=-1).reshape(-1, 2)
    return grid + rng.uniform(-0.4, 0.4, grid.shape) * cell


def _reticulation(
    hu: np.ndarray,
    frame: _Frame,
    extent: np.ndarray,
    depth: np.ndarray,
    patch: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Subpleural network of thin dense lines (Voronoi edges), patchy, fading inwards."""
    strength = extent * np.exp(-depth / RETICULATION_DEPTH) * RETICULATION_GAIN
    strength = np.minimum(strength * (0.5 + 0.5 * _smoothstep(-1.0, 1.0, patch)), 1.0)
    seeds = _jittered_grid(frame.anatomy.reticulation_cell, rng)
    rows, cols = np.nonzero(strength > 0.03)
    if len(rows) == 0:
        return
    points = np.stack([frame.u[rows, cols], frame.v[rows, cols]], axis=1)
    distances, nearest = KDTree(seeds).query(points, k=2)
    edge = _bisector_distance(points, seeds, distances, nearest)
    line = _line_profile(edge, RETICULATION_WIDTH, frame.pixel) * strength[rows, cols]
    hu[rows, cols] += line * (RETICULATION_HU - hu[rows, cols])


def _honeycomb(
    hu: np.ndarray,
    frame: _Frame,
    lung: np.ndarray,
    extent: np.ndarray,
    depth: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Clusters of thin-walled air cysts in up to three rows under the pleura."""
    radius = frame.anatomy.cyst_radius
    seeds, radii = _cyst_seeds(frame, lung, extent, depth, radius, rng)
    if len(seeds) < 2:
        return
    reach = float(radii.max()) + 3 * CYST_WALL + frame.pixel
    rows, cols = np.nonzero(lung & (depth < (2 * len(CYST_ROWS) + 1.5) * radius))
    points = np.stack([frame.u[rows, cols], frame.v[rows, cols]], axis=1)
    distances, nearest = KDTree(seeds).query(points, k=2, distance_upper_bound=reach)
    near = np.isfinite(distances[:, 0])
    points, distances, nearest = points[near], distances[near], nearest[near]
    rows, cols = rows[near], cols[near]
    # A lone cyst (no second seed in reach) has only its round outer wall.
    paired = np.isfinite(distances[:, 1])
    nearest[~paired, 1] = nearest[~paired, 0]
    own = radii[nearest[:, 0]]
    inside = distances[:, 0] < own
    # Shared walls exist only between cysts; outside them the Voronoi edges would be spikes.
    edge = np.where(paired & inside, _bisector_distance(points, seeds, distances, nearest), np.inf)
    wall_distance = np.minimum(np.abs(distances[:, 0] - own), edge)
    values = hu[rows, cols]
    values = np.where(inside, CYST_HU, values)
    wall = _line_profile(wall_distance, CYST_WALL, frame.pixel)
    hu[rows, cols] = values + wall * (CYST_WALL_HU - values)


def _cyst_seeds(
    frame: _Frame,
    lung: np.ndarray,
    extent: np.ndarray,
    depth: np.ndarray,
    radius: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Cyst centres in rows at depths radius, 3 radius, 5 radius; deeper rows need more extent."""
    chosen = []
    pixel_area = frame.pixel**2
    for row, needed in enumerate(CYST_ROWS):
        band = np.abs(depth - radius * (1 + 2 * row)) < 0.35 * radius
        rows, cols = np.nonzero(lung & band & (extent > needed))
        # Band area / band width = its length; one cyst per diameter, oversampled then thinned.
        length = len(rows) * pixel_area / (0.7 * radius)
        count = min(len(rows), int(length / (2 * radius) * CYST_OVERSAMPLE))
        if count == 0:
            continue
        pick = rng.choice(len(rows), size=count, replace=False)
        chosen.append(
            np.stack([frame.u[rows[pick], cols[pick]], frame.v[rows[pick], cols[pick]]], 1)
        )
    if not chosen:
        return np.zeros((0, 2)), np.zeros(0)
    seeds = _thin_out(np.concatenate(chosen).astype(np.float64), CYST_SEPARATION * radius)
    radii = radius * rng.uniform(0.75, 1.25, len(seeds))
    return seeds, radii


def _thin_out(points: np.ndarray, min_distance: float) -> np.ndarray:
    """Drop points until none is closer than `min_distance` to an earlier kept one."""
    dropped: set[int] = set()
    for i, j in sorted(KDTree(points).query_pairs(min_distance)):
        if i not in dropped:
            dropped.add(j)
    keep = np.array([i not in dropped for i in range(len(points))], dtype=bool)
    return points[keep]


def _vessels(
    frame: _Frame, lungs: tuple[_Lung, _Lung], z: float, rng: np.random.Generator
) -> np.ndarray:
    """Vessel density 0..1: branching lines from each hilum plus vessels cut across."""
    centres, radii = [], []
    # Slices far above or below the hila cut only the thinner, more peripheral vessels.
    calibre = 0.35 + 0.65 * math.exp(-(((z - HILAR_Z[0]) / HILAR_Z[1]) ** 2))
    for lung in lungs:
        points, sizes = _vessel_tree(frame, lung, calibre, rng)
        centres.append(points)
        radii.append(sizes)
    return _rasterise_discs(frame, np.concatenate(centres), np.concatenate(radii))


def _vessel_tree(
    frame: _Frame, lung: _Lung, calibre: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Points and radii of one lung's vessels (nominal coordinates): hilar trunks with side
    branches, short in-plane segments and cross-cut dots, thinner away from the hilum."""
    a = frame.anatomy
    area = lung.half_axes[0] * lung.half_axes[1] / (LUNG_HALF_AXES[0] * LUNG_HALF_AXES[1])
    n_trunks = max(1, round(a.vessel_trunks * calibre))
    n_children = n_trunks * VESSEL_CHILDREN
    n_segments, n_dots = round(a.vessel_segments * area), round(a.vessel_dots * area)
    # All random draws come first and never depend on the size: the same vessels at every size.
    trunk = (rng.uniform(-1.4, 1.4, n_trunks), rng.uniform(*VESSEL_TRUNK_LENGTH, n_trunks))
    trunk_bend = rng.normal(0.0, 0.3, n_trunks)
    child_parent = rng.integers(0, n_trunks, n_children)
    child_start = rng.uniform(0.3, 0.8, n_children)
    child_turn = rng.uniform(0.4, 0.9, n_children) * rng.choice([-1.0, 1.0], n_children)
    child_length = rng.uniform(0.2, 0.45, n_children)
    segment_at = _polar_draw(rng, n_segments)
    segment_turn = rng.normal(0.0, 0.45, n_segments)
    segment_length = rng.uniform(*VESSEL_SEGMENT_LENGTH, n_segments)
    dot_at = _polar_draw(rng, n_dots)

    steps = max(8, math.ceil(max(VESSEL_TRUNK_LENGTH[1] * max(lung.half_axes), 0.1) * frame.size))
    t = np.linspace(0.0, 1.0, steps)[np.newaxis, :]
    hx, hy = HILUM_LOCAL
    trunk_x, trunk_y = _branch(hx, hy, trunk[0], trunk[1], trunk_bend, t)
    start = np.rint(child_start * (steps - 1)).astype(int)
    sx, sy = trunk_x[child_parent, start], trunk_y[child_parent, start]
    child_x, child_y = _branch(sx, sy, trunk[0][child_parent] + child_turn, child_length, 0.0, t)
    local_x = np.concatenate([trunk_x.ravel(), child_x.ravel()])
    local_y = np.concatenate([trunk_y.ravel(), child_y.ravel()])
    tree_u, tree_v = lung.nominal(local_x, local_y)
    segment_u, segment_v, segment_rho = _segments(lung, segment_at, segment_turn, segment_length, t)
    dot_u, dot_v = lung.nominal(
        hx + dot_at[0] * np.cos(dot_at[1]), hy + dot_at[0] * np.sin(dot_at[1])
    )
    u = np.concatenate([tree_u, segment_u, dot_u])
    v = np.concatenate([tree_v, segment_v, dot_v])
    rho = np.concatenate([np.hypot(local_x - hx, local_y - hy), segment_rho, dot_at[0]])
    return np.stack([u, v], axis=1), _vessel_radius(rho, calibre)


def _polar_draw(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Distance (lung-frame units) and angle from the hilum; uniform in distance, so the density
    per area falls away from the hilum."""
    return rng.uniform(0.2, VESSEL_REACH, count), rng.uniform(-1.9, 1.9, count)


def _segments(
    lung: _Lung,
    at: tuple[np.ndarray, np.ndarray],
    turn: np.ndarray,
    length: np.ndarray,
    t: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Short straight vessel pieces, roughly radial from the hilum: nominal u, v and the hilar
    distance of every point."""
    hx, hy = HILUM_LOCAL
    rho, angle = at
    cu, cv = lung.nominal(hx + rho * np.cos(angle), hy + rho * np.sin(angle))
    hu_, hv = lung.nominal(np.array(hx), np.array(hy))
    direction = np.arctan2(cv - hv, cu - hu_) + turn
    offset = (t - 0.5) * length[:, np.newaxis]
    u = cu[:, np.newaxis] + np.cos(direction)[:, np.newaxis] * offset
    v = cv[:, np.newaxis] + np.sin(direction)[:, np.newaxis] * offset
    return u.ravel(), v.ravel(), np.broadcast_to(rho[:, np.newaxis], u.shape).ravel()


def _vessel_radius(rho: np.ndarray, calibre: float) -> np.ndarray:
    """Radius (relative units) at lung-frame distance `rho` from the hilum; `calibre` scales
    the hilar end."""
    taper = np.clip(1 - rho / VESSEL_REACH, 0.0, 1.0) ** 1.5
    return VESSEL_TIP_RADIUS + (VESSEL_HILAR_RADIUS * calibre - VESSEL_TIP_RADIUS) * taper


def _branch(
    x0: np.ndarray | float,
    y0: np.ndarray | float,
    angle: np.ndarray,
    length: np.ndarray,
    bend: np.ndarray | float,
    t: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Gently curved lines in lung-frame units: [branches, steps] x and y."""
    dx, dy = np.cos(angle)[:, None], np.sin(angle)[:, None]
    along = np.asarray(length)[:, None] * t
    aside = np.asarray(bend)[..., None] * along * t
    return (
        np.asarray(x0)[..., None] + dx * along - dy * aside,
        np.asarray(y0)[..., None] + dy * along + dx * aside,
    )


def _rasterise_discs(frame: _Frame, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Union of discs as 0..1 coverage (partial at the edges and for sub-pixel discs)."""
    height, width = frame.shape
    rows, cols = frame.to_pixels(centres[:, 0], centres[:, 1])
    rows, cols = np.rint(rows).astype(int), np.rint(cols).astype(int)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    radius_px = np.zeros(frame.shape, dtype=np.float32)
    np.maximum.at(radius_px, (rows[inside], cols[inside]), radii[inside] / frame.pixel)
    distance, (near_r, near_c) = ndimage.distance_transform_edt(radius_px == 0, return_indices=True)
    own = radius_px[near_r, near_c]
    coverage = np.clip(own - distance + 0.5, 0.0, 1.0) * np.minimum(1.0, 2.0 * own)
    return coverage.astype(np.float32)


# --- DICOM, PNG and the dataset ------------------------------------------------------------------


def dicom_dataset(hu: np.ndarray, meta: SliceMeta) -> Dataset:
    """A CT Image Storage dataset (Explicit VR Little Endian) holding `hu` as 12-bit values."""
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = CTImageStorage
    file_meta.MediaStorageSOPInstanceUID = meta.sop_uid
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = file_meta
    _identity(ds, meta)
    _geometry(ds, meta, hu.shape)
    stored = np.clip(hu.astype(np.int32) - RESCALE_INTERCEPT, 0, STORED_MAX).astype(np.uint16)
    ds.set_pixel_data(stored, "MONOCHROME2", 12, generate_instance_uid=False)
    ds.RescaleIntercept = RESCALE_INTERCEPT
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = WINDOW_CENTER
    ds.WindowWidth = WINDOW_WIDTH
    return ds


def _identity(ds: Dataset, meta: SliceMeta) -> None:
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.sop_uid
    ds.StudyInstanceUID = meta.study_uid
    ds.SeriesInstanceUID = meta.series_uid
    ds.FrameOfReferenceUID = meta.frame_of_reference_uid
    ds.PatientID = meta.patient_id
    ds.PatientName = meta.patient_name
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = STUDY_DATE
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "090000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Modality = "CT"
    ds.BodyPartExamined = "CHEST"
    ds.Manufacturer = "medserve"
    ds.ManufacturerModelName = "synthetic chest CT"
    ds.StudyDescription = "CT CHEST HRCT (synthetic)"
    ds.SeriesDescription = "Synthetic axial lung slices"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = meta.instance_number
    ds.BurnedInAnnotation = "NO"


def _geometry(ds: Dataset, meta: SliceMeta, shape: tuple[int, ...]) -> None:
    spacing = round(meta.pixel_spacing_mm, 6)
    corner = round(-FIELD_OF_VIEW_MM / 2 + spacing / 2, 4)
    ds.PatientPosition = "HFS"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [corner, corner, meta.slice_location_mm]
    ds.SliceLocation = meta.slice_location_mm
    ds.SliceThickness = SLICE_THICKNESS_MM
    ds.PixelSpacing = [spacing, spacing]
    ds.KVP = 120
    ds.ConvolutionKernel = "LUNG"


def write_slice(path: Path, hu: np.ndarray, meta: SliceMeta, compressed: bool = False) -> Path:
    """Write one slice as a DICOM Part-10 file; `compressed` uses RLE Lossless."""
    ds = dicom_dataset(hu, meta)
    if compressed:
        ds.compress(RLELossless, generate_instance_uid=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def window_to_uint8(
    hu: np.ndarray, center: float = WINDOW_CENTER, width: float = WINDOW_WIDTH
) -> np.ndarray:
    """HU through a display window to 0..255 (black = center - width/2)."""
    scaled = (hu.astype(np.float32) - (center - width / 2)) / width
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)


def write_png_slice(
    path: Path, hu: np.ndarray, center: float = WINDOW_CENTER, width: float = WINDOW_WIDTH
) -> Path:
    """The slice windowed to an 8-bit grayscale PNG (the service's picture-input convention)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(window_to_uint8(hu, center, width), mode="L").save(path, format="PNG")
    return path


def patient_id(label: Label, number: int) -> str:
    """ "SYN-NSIP-003" for the third NSIP patient (numbers start at 1 within each label)."""
    return f"SYN-{label.upper()}-{number:03d}"


def slice_meta(config: SyntheticCtConfig, label: Label, number: int, index: int) -> SliceMeta:
    """DICOM identity of slice `index` (0-based) of patient `number` (1-based) of `label`."""
    pid = patient_id(label, number)
    # The size is part of the entropy: other pixels must not reuse these instance UIDs.
    base = [UID_NAMESPACE, str(config.seed), str(config.size), pid]
    z = slice_positions(config.slices_per_patient)[index]
    return SliceMeta(
        patient_id=pid,
        patient_name=f"Synthetic^Patient{number:03d}",
        study_uid=generate_uid(entropy_srcs=[*base, "study"]),
        series_uid=generate_uid(entropy_srcs=[*base, "series"]),
        frame_of_reference_uid=generate_uid(entropy_srcs=[*base, "frame-of-reference"]),
        sop_uid=generate_uid(entropy_srcs=[*base, "slice", str(index)]),
        instance_number=index + 1,
        slice_location_mm=-round(z * LUNG_HEIGHT_MM, 2),
        pixel_spacing_mm=FIELD_OF_VIEW_MM / config.size,
    )


def patient_rngs(
    config: SyntheticCtConfig, label: Label, number: int
) -> tuple[np.random.Generator, list[np.random.Generator]]:
    """The patient's anatomy RNG and one RNG per slice; independent of the other counts, so
    adding patients or labels never changes existing ones."""
    key = [config.seed, LABELS.index(label), number]
    slices = [np.random.default_rng([*key, 1, index]) for index in range(config.slices_per_patient)]
    return np.random.default_rng([*key, 0]), slices


def write_dataset(config: SyntheticCtConfig, root: Path) -> list[Path]:
    """Write `<root>/<label>/<patient_id>/<slice:03d>.dcm` for every patient; returns the paths."""
    counts = {"nsip": config.nsip_patients, "uip": config.uip_patients}
    paths = []
    for label in LABELS:
        for number in range(1, counts[label] + 1):
            paths.extend(_write_patient(config, label, number, root))
    return paths


def _write_patient(config: SyntheticCtConfig, label: Label, number: int, root: Path) -> list[Path]:
    anatomy_rng, slice_rngs = patient_rngs(config, label, number)
    anatomy = draw_anatomy(label, anatomy_rng)
    folder = root / label / patient_id(label, number)
    paths = []
    for index, (z, rng) in enumerate(
        zip(slice_positions(config.slices_per_patient), slice_rngs, strict=True)
    ):
        hu = render_slice(anatomy, z, config.size, rng).hu
        meta = slice_meta(config, label, number, index)
        paths.append(write_slice(folder / f"{index:03d}.dcm", hu, meta, config.compressed))
    return paths


def cache_key(config: SyntheticCtConfig) -> str:
    """16 hex digits of the SHA-256 of the generator version and the config's JSON."""
    text = f"{GENERATOR_VERSION}\n{config.model_dump_json()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_or_generate(config: SyntheticCtConfig, cache_root: Path) -> Path:
    """The dataset folder for `config` under `cache_root`, generated on first use.

    Generated into a temporary sibling and renamed, so a crash never leaves a half-written
    folder under the final name; if a concurrent caller won the race, its copy is used.
    """
    target = cache_root / cache_key(config)
    if target.is_dir():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=cache_root, prefix=f".{target.name}-"))
    try:
        write_dataset(config, temporary)
        os.rename(temporary, target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    return target
