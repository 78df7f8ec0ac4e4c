"""Labelled CT slices from a folder, patient-level splits, undersampling and augmentation.

A hospital trains on its own images laid out as `<root>/<label>/<patient>/*.dcm|png|jpg`; the
synthetic generator writes the same layout, so both go through this one loader.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel

from medserve.ct.imaging import ImageRejected, Window, decode_slice, model_input

SLICE_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")
SPLITS = ("train", "validation", "test")


class SkippedFile(BaseModel):
    """A file the loader could not use (kept in the model card: nothing silently dropped)."""

    path: str
    reason: str


@dataclass(frozen=True)
class SliceSet:
    """Slices at the model's input size with their class index and patient."""

    images: np.ndarray  # float32 [n, size, size, 1], windowed [0, 1]
    labels: np.ndarray  # int64 [n], index into `classes`
    patients: np.ndarray  # str [n], "<label>/<patient>"
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask: np.ndarray) -> SliceSet:
        return SliceSet(self.images[mask], self.labels[mask], self.patients[mask], self.classes)

    def class_counts(self) -> dict[str, int]:
        return {name: int(np.sum(self.labels == i)) for i, name in enumerate(self.classes)}

    def sha256(self) -> str:
        """Fingerprint of the pixels and labels (the model card's training-data hash)."""
        digest = hashlib.sha256(np.ascontiguousarray(self.images).tobytes())
        digest.update(self.labels.astype(np.int64).tobytes())
        return digest.hexdigest()


def find_slices(root: Path) -> list[tuple[str, str, Path]]:
    """(label, patient, path) of every slice file under `<root>/<label>/<patient>/`."""
    found = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for patient_dir in sorted(p for p in label_dir.iterdir() if p.is_dir()):
            for path in sorted(patient_dir.iterdir()):
                if path.suffix.lower() in SLICE_SUFFIXES:
                    found.append((label_dir.name, patient_dir.name, path))
    return found


def load_slices(
    root: Path, size: int, window: Window, max_bytes: int = 64 * 1024 * 1024
) -> tuple[SliceSet, list[SkippedFile]]:
    """Every readable slice under `root`, resized to `size`; unreadable files are reported."""
    found = find_slices(root)
    classes = tuple(sorted({label for label, _, _ in found}))
    if len(classes) < 2:
        raise ValueError(f"{root}: expected at least two label folders, found {list(classes)}")
    images, labels, patients, skipped = [], [], [], []
    for label, patient, path in found:
        try:
            decoded = decode_slice(path.read_bytes(), window, max_bytes, side_range=(16, 8192))
        except ImageRejected as exc:
            skipped.append(SkippedFile(path=str(path.relative_to(root)), reason=exc.detail))
            continue
        images.append(model_input(decoded.windowed, size))
        labels.append(classes.index(label))
        patients.append(f"{label}/{patient}")
    if not images:
        raise ValueError(f"{root}: no readable slices")
    slices = SliceSet(
        np.stack(images), np.array(labels, dtype=np.int64), np.array(patients), classes
    )
    return slices, skipped


def split_by_patient(
    slices: SliceSet, fractions: Sequence[float], seed: int
) -> tuple[SliceSet, SliceSet, SliceSet]:
    """Train/validation/test with every patient in exactly one split, stratified by class.

    Each class's patients are shuffled and dealt out by `fractions`, with at least one patient
    of every class in every split (so each class needs three patients or more).
    """
    rng = np.random.default_rng(seed)
    assignment: dict[str, int] = {}
    for index, name in enumerate(slices.classes):
        patients = np.unique(slices.patients[slices.labels == index])
        if len(patients) < len(SPLITS):
            raise ValueError(
                f"class {name!r} has {len(patients)} patient(s); a patient-level split into "
                f"{'/'.join(SPLITS)} needs at least {len(SPLITS)}"
            )
        rng.shuffle(patients)
        counts = _patients_per_split(len(patients), fractions)
        bounds = np.cumsum(counts)[:-1]
        for split, group in enumerate(np.split(patients, bounds)):
            assignment.update(dict.fromkeys(group.tolist(), split))
    split_of = np.array([assignment[p] for p in slices.patients])
    train, validation, test = (slices.subset(split_of == i) for i in range(len(SPLITS)))
    return train, validation, test


def _patients_per_split(n: int, fractions: Sequence[float]) -> list[int]:
    counts = [max(1, round(n * f)) for f in fractions[1:]]
    return [n - sum(counts), *counts]


def undersample(slices: SliceSet, seed: int) -> SliceSet:
    """Random undersampling of every class to the smallest class's count (as the source)."""
    rng = np.random.default_rng(seed)
    smallest = min(slices.class_counts().values())
    keep = np.zeros(len(slices), dtype=bool)
    for index in range(len(slices.classes)):
        members = np.flatnonzero(slices.labels == index)
        keep[rng.choice(members, size=smallest, replace=False)] = True
    return slices.subset(keep)


@dataclass(frozen=True)
class Augmentation:
    """The source's augmentation: random crop, horizontal flip, rotation within +-degrees."""

    copies: int = 3
    min_crop: float = 0.85
    max_rotation_degrees: float = 15.0


def augment(slices: SliceSet, augmentation: Augmentation, seed: int) -> SliceSet:
    """The originals plus `copies` randomly transformed versions of each (deterministic)."""
    if augmentation.copies == 0:
        return slices
    rng = np.random.default_rng(seed)
    size = slices.images.shape[1]
    extra = [
        transform(image[..., 0], size, augmentation, rng)
        for _ in range(augmentation.copies)
        for image in slices.images
    ]
    repeat = augmentation.copies + 1
    return SliceSet(
        np.concatenate([slices.images, np.stack(extra)[..., np.newaxis]]),
        np.tile(slices.labels, repeat),
        np.tile(slices.patients, repeat),
        slices.classes,
    )


def transform(
    image: np.ndarray, size: int, augmentation: Augmentation, rng: np.random.Generator
) -> np.ndarray:
    """One random crop + flip + rotation of a [size, size] windowed slice."""
    crop = round(size * rng.uniform(augmentation.min_crop, 1.0))
    top, left = rng.integers(0, size - crop + 1, size=2)
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))
    picture = picture.crop((int(left), int(top), int(left) + crop, int(top) + crop))
    if rng.random() < 0.5:
        picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    angle = rng.uniform(-augmentation.max_rotation_degrees, augmentation.max_rotation_degrees)
    # Corners uncovered by the rotation are air (0 in the window), as outside the body.
    picture = picture.rotate(float(angle), resample=Image.Resampling.BILINEAR, fillcolor=0.0)
    picture = picture.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(picture, dtype=np.float32)
