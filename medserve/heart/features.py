"""Canonical feature matrix of the heart model (NumPy only: serving imports no pandas/sklearn)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from medserve.heart.codes import FEATURE_NAMES, FEATURES

NUMERIC = [i for i, f in enumerate(FEATURES) if f.kind == "numeric"]
BINARY = [i for i, f in enumerate(FEATURES) if f.kind == "binary"]
CATEGORICAL = [i for i, f in enumerate(FEATURES) if f.kind == "categorical"]
CATEGORICAL_NAMES = {FEATURE_NAMES[i] for i in CATEGORICAL}


def to_matrix(rows: Iterable[Mapping[str, float | int | None]]) -> np.ndarray:
    """Rows keyed by source feature names -> float64 matrix; missing codes and None become NaN."""
    matrix = np.array(
        [[np.nan if row[name] is None else row[name] for name in FEATURE_NAMES] for row in rows],
        dtype=np.float64,
    ).reshape(-1, len(FEATURE_NAMES))
    for column, spec in enumerate(FEATURES):
        for code in spec.missing_codes:
            matrix[matrix[:, column] == code, column] = np.nan
    return matrix
