"""Canonical feature matrix of the heart model (NumPy only: serving imports no pandas/sklearn)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from medserve.heart.codes import FEATURE_NAMES, FEATURES, FeatureSpec

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


@dataclass(frozen=True)
class _ColumnRules:
    """Every feature's rule as one array per kind, so a whole matrix is judged in a few NumPy
    operations (per-column operations cost ~100 us per request here)."""

    low: np.ndarray  # numeric bounds (-inf/inf for coded columns)
    high: np.ndarray
    whole: np.ndarray  # must be an integer (counts and codes)
    nullable: np.ndarray  # NaN (null) allowed
    coded: np.ndarray
    allowed: np.ndarray  # [features, largest code + 1]: code allowed for the feature

    @classmethod
    def of(cls, features: Sequence[FeatureSpec]) -> _ColumnRules:
        largest = max(code for f in features for code in (*f.codes, *f.missing_codes))
        allowed = np.zeros((len(features), largest + 1), dtype=bool)
        for row, spec in enumerate(features):
            allowed[row, [*spec.codes, *spec.missing_codes]] = True
        coded = np.array([bool(f.codes) for f in features])
        return cls(
            low=np.array([-np.inf if f.codes else f.minimum for f in features], dtype=np.float64),
            high=np.array([np.inf if f.codes else f.maximum for f in features], dtype=np.float64),
            whole=np.array([bool(f.codes) or f.integer for f in features]),
            nullable=np.array([bool(f.missing_codes) for f in features]),
            coded=coded,
            allowed=allowed,
        )


_RULES = _ColumnRules.of(FEATURES)


def valid_rows(matrix: np.ndarray) -> bool:
    """Every value of a raw matrix passes the schema's rules (codes, ranges, integers, missing
    only where null is allowed), checked on the whole array at once."""
    if matrix.ndim != 2 or matrix.shape[1] != len(FEATURES):
        return False
    rules = _RULES
    missing = np.isnan(matrix)
    if (missing & ~rules.nullable).any():
        return False
    values = np.where(missing, 0.0, matrix)
    if not np.isfinite(values).all() or ((values < rules.low) | (values > rules.high)).any():
        return False
    if (rules.whole & (values != np.floor(values))).any():
        return False
    codes = np.where(rules.coded, values, 0.0)
    if ((codes < 0) | (codes >= rules.allowed.shape[1])).any():
        return False
    columns = np.arange(len(FEATURES))
    present_code = rules.coded & ~missing
    return bool(rules.allowed[columns, codes.astype(np.int64)][present_code].all())
