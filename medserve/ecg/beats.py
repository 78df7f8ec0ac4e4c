"""The beat layout every ECG part shares (the ECG5000 layout) and a labelled set of beats."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

BEAT_SAMPLES = 140  # samples per beat, RR-normalised (as in ECG5000)
NORMAL = "normal"


@dataclass(frozen=True)
class BeatSet:
    """Beats with one label per beat.

    `label` is `NORMAL` or the abnormal class name; `severity` is "" for normal beats and
    "mild" / "moderate" / "severe" for synthetic abnormal beats ("" when unknown, e.g. ECG5000);
    `record` groups beats cut from the same recording, so that splits never share a record.
    """

    beats: np.ndarray  # float32 [n, BEAT_SAMPLES], millivolts (or the source's units)
    label: np.ndarray  # str [n]
    severity: np.ndarray  # str [n]
    record: np.ndarray  # int64 [n]

    def __post_init__(self) -> None:
        n = len(self.beats)
        if self.beats.ndim != 2 or self.beats.shape[1] != BEAT_SAMPLES:
            raise ValueError(f"beats must be [n, {BEAT_SAMPLES}], got {self.beats.shape}")
        if not (len(self.label) == len(self.severity) == len(self.record) == n):
            raise ValueError("beats, label, severity and record must have the same length")

    def __len__(self) -> int:
        return len(self.beats)

    @property
    def is_anomalous(self) -> np.ndarray:
        """bool [n]: the beat is not normal."""
        return self.label != NORMAL

    def subset(self, index: np.ndarray) -> BeatSet:
        """The beats at `index` (an integer or boolean index array)."""
        return BeatSet(
            self.beats[index], self.label[index], self.severity[index], self.record[index]
        )

    def sha256(self) -> str:
        """Content hash of beats and labels (the training-data hash in model metadata)."""
        digest = hashlib.sha256(np.ascontiguousarray(self.beats, dtype="<f4").tobytes())
        for column in (self.label, self.severity, self.record):
            digest.update("\x1f".join(map(str, column.tolist())).encode())
        return digest.hexdigest()

    @staticmethod
    def concat(parts: list[BeatSet]) -> BeatSet:
        """One set from several (records must already be distinct between parts)."""
        return BeatSet(
            np.concatenate([p.beats for p in parts]).astype(np.float32),
            np.concatenate([p.label for p in parts]),
            np.concatenate([p.severity for p in parts]),
            np.concatenate([p.record for p in parts]).astype(np.int64),
        )
