"""The beat layout every ECG part shares (the ECG5000 layout) and a labelled set of beats."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

BEAT_SAMPLES = 140  # samples per beat, RR-normalised (as in ECG5000)
NORMAL = "normal"
# How the prediction log keeps a beat: its 140 samples as little-endian float32, base64 text
# (748 characters, against ~1,300 for JSON numbers, and no Python float per sample to format).
LOGGED_BEAT_KEY = "beat_float32_base64"
LEGACY_BEAT_KEY = "beat"  # logs written before: a JSON list of numbers


def logged_beat(beat: np.ndarray) -> dict[str, str]:
    """One beat as the prediction log stores it."""
    raw = np.ascontiguousarray(beat, dtype="<f4").tobytes()
    return {LOGGED_BEAT_KEY: base64.b64encode(raw).decode("ascii")}


def beat_from_log(inputs: Mapping[str, Any]) -> np.ndarray:
    """The float32 samples of a logged beat (either layout the log has held)."""
    if LOGGED_BEAT_KEY in inputs:
        raw = base64.b64decode(inputs[LOGGED_BEAT_KEY], validate=True)
        beat = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    else:
        beat = np.asarray(inputs[LEGACY_BEAT_KEY], dtype=np.float32)
    if beat.shape != (BEAT_SAMPLES,):
        raise ValueError(f"a logged beat holds {beat.size} samples, not {BEAT_SAMPLES}")
    return beat


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
