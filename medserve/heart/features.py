"""Canonical feature matrix of the heart model (NumPy only: serving imports no pandas/sklearn)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from medserve.heart.codes import FEATURE_NAMES, FEATURES

NUMERIC = [i for i, f in enumerate(FEATURES) if f.kind == "numeric"]
BINARY = [i for i, f in enumerate(FEATURES) if f.kind == "binary"]
CATEGORICAL = [i for i, f in enumerate(FEATURES) if f.kind == "categorical"]
CATEGORICAL_NAMES = {FEATURE_NAMES[i] for i in CATEGORICAL}


def raw_matrix(rows: Iterable[Mapping[str, float | int | None]]) -> np.ndarray:
    """Rows keyed by source feature names -> float64 matrix of the values as sent (None = NaN;
    a missing *code* such as `caa = 4` stays as it is)."""
    return np.array(
        [[np.nan if row[name] is None else row[name] for name in FEATURE_NAMES] for row in rows],
        dtype=np.float64,
    ).reshape(-1, len(FEATURE_NAMES))


def mark_missing(matrix: np.ndarray) -> np.ndarray:
    """A copy of a raw matrix with every missing code replaced by NaN (what the model reads)."""
    marked = np.array(matrix, dtype=np.float64)
    for column, spec in enumerate(FEATURES):
        for code in spec.missing_codes:
            marked[marked[:, column] == code, column] = np.nan
    return marked


def to_matrix(rows: Iterable[Mapping[str, float | int | None]]) -> np.ndarray:
    """Rows keyed by source feature names -> float64 matrix; missing codes and None become NaN."""
    return mark_missing(raw_matrix(rows))


def row_values(row: Sequence[float]) -> dict[str, int | float | None]:
    """One raw matrix row -> the JSON values a client sends: codes and counts as ints, NaN as
    None for the fields that take null; anything else stays a float for the schema to judge."""
    return {
        spec.name: _json_value(spec.codes or spec.integer, value)
        for spec, value in zip(FEATURES, row, strict=True)
    }


def _json_value(whole: object, value: float) -> int | float | None:
    if whole:
        if math.isnan(value):
            return None
        return int(value) if value.is_integer() else value
    return value


def valid_rows(matrix: np.ndarray) -> bool:
    """Every value of a raw matrix passes the schema's rules (codes, ranges, integers, missing
    only where null is allowed), checked column by column on the whole array."""
    if matrix.ndim != 2 or matrix.shape[1] != len(FEATURES):
        return False
    for column, spec in zip(matrix.T, FEATURES, strict=True):
        missing = np.isnan(column)
        if missing.any() and not spec.missing_codes:
            return False
        present = column[~missing]
        if spec.codes:
            allowed = np.array([*spec.codes, *spec.missing_codes], dtype=np.float64)
            if not np.isin(present, allowed).all():
                return False
            continue
        if not (np.isfinite(present).all() and (present >= spec.minimum).all()):
            return False
        if not (present <= spec.maximum).all():
            return False
        if spec.integer and not (present == np.round(present)).all():
            return False
    return True
