"""Loader for the real ECG5000 text format (UCR archive): one beat per line, label + 140 values.

Labels: 1 normal, 2 R-on-T premature ventricular contraction, 3 premature ventricular
contraction, 4 supraventricular premature or ectopic beat, 5 unclassified beat. Values may be
whitespace- or comma-separated and written in scientific notation (`1.0000000e+00`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from medserve.ecg.beats import BEAT_SAMPLES, NORMAL, BeatSet

ECG5000_CLASSES = {
    1: NORMAL,
    2: "r_on_t_pvc",
    3: "pvc",
    4: "supraventricular_or_ectopic",
    5: "unclassified",
}


def _row(line: str, number: int) -> tuple[str, list[float]]:
    fields = line.replace(",", " ").split()
    if len(fields) != BEAT_SAMPLES + 1:
        raise ValueError(f"line {number}: expected 1 label + {BEAT_SAMPLES} values")
    try:
        numbers = [float(field) for field in fields]
    except ValueError:
        raise ValueError(f"line {number}: non-numeric field") from None
    if not all(math.isfinite(x) for x in numbers):
        raise ValueError(f"line {number}: non-finite value")
    label = numbers[0]
    if not label.is_integer() or int(label) not in ECG5000_CLASSES:
        raise ValueError(f"line {number}: label must be one of {sorted(ECG5000_CLASSES)}")
    return ECG5000_CLASSES[int(label)], numbers[1:]


def load_ecg5000(path: Path) -> BeatSet:
    """All beats of an ECG5000-format file (blank lines skipped; errors name the line only,
    never its values)."""
    labels, beats = [], []
    with path.open() as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            label, values = _row(line, number)
            labels.append(label)
            beats.append(values)
    if not beats:
        raise ValueError(f"{path.name}: no beats")
    n = len(beats)
    return BeatSet(
        np.asarray(beats, dtype=np.float32),
        np.asarray(labels, dtype=str),
        np.full(n, "", dtype=str),
        np.arange(n, dtype=np.int64),
    )
