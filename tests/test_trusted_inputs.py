"""The models' vectorised checks of v2 tensors accept exactly what their JSON schemas accept
(property-based: hypothesis draws values around every rule's edges), and a model reads the same
rows whichever path they took."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from medserve.ecg.beats import BEAT_SAMPLES
from medserve.ecg.schema import MAX_ABS_SAMPLE, EcgBeat, valid_beats
from medserve.heart.codes import FEATURES, FeatureSpec
from medserve.heart.features import mark_missing, raw_matrix, row_values, valid_rows
from medserve.heart.schema import HeartPatient

PATIENTS = TypeAdapter(list[HeartPatient])


def schema_accepts(matrix: np.ndarray) -> bool:
    try:
        PATIENTS.validate_python([row_values(row) for row in matrix.tolist()])
    except ValidationError:
        return False
    return True


def edge_values(spec: FeatureSpec) -> st.SearchStrategy[float]:
    """Values on and around the feature's rules: codes and their neighbours, the bounds, just
    past them, fractions, NaN and infinities."""
    special = [math.nan, math.inf, -math.inf, -0.0]
    if spec.codes:
        codes = [*spec.codes, *spec.missing_codes]
        near = [c + d for c in codes for d in (-1, -0.5, 0.5, 1)]
        return st.sampled_from([float(c) for c in codes] + near + special)
    assert spec.minimum is not None and spec.maximum is not None
    bounds = [spec.minimum, spec.maximum]
    near = [b + d for b in bounds for d in (-1e-9, -0.5, 0.5, 1e-9)]
    inside = st.floats(spec.minimum, spec.maximum, allow_nan=False)
    return st.one_of(st.sampled_from([float(b) for b in bounds] + near + special), inside)


def row_strategy() -> st.SearchStrategy[list[float]]:
    return st.tuples(*(edge_values(spec) for spec in FEATURES)).map(list)


@settings(max_examples=600, deadline=None)
@given(st.lists(row_strategy(), min_size=1, max_size=4))
def test_vectorised_check_agrees_with_the_schema(rows: list[list[float]]) -> None:
    matrix = np.array(rows, dtype=np.float64)
    assert valid_rows(matrix) == schema_accepts(matrix)


@settings(max_examples=200, deadline=None)
@given(st.lists(row_strategy(), min_size=1, max_size=4))
def test_accepted_rows_reach_the_model_unchanged(rows: list[list[float]]) -> None:
    matrix = np.array(rows, dtype=np.float64)
    if not valid_rows(matrix):
        return
    instances = PATIENTS.validate_python([row_values(row) for row in matrix.tolist()])
    from_schema = raw_matrix(instance.model_dump() for instance in instances)
    np.testing.assert_array_equal(mark_missing(from_schema), mark_missing(matrix))


@pytest.mark.parametrize("shape", [(1, 12), (2, 14), (13,)])
def test_a_matrix_of_the_wrong_shape_is_never_vouched_for(shape: tuple[int, ...]) -> None:
    assert not valid_rows(np.zeros(shape))


BEATS = TypeAdapter(list[EcgBeat])
SAMPLE_EDGES = [MAX_ABS_SAMPLE, -MAX_ABS_SAMPLE, math.nextafter(MAX_ABS_SAMPLE, math.inf), math.nan,
                math.inf, -math.inf, 0.0, 1.5]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, BEAT_SAMPLES - 1),
            st.one_of(st.sampled_from(SAMPLE_EDGES), st.floats(-200, 200)),
        ),
        max_size=4,
    ),
    st.integers(1, 3),
)
def test_vectorised_beat_check_agrees_with_the_schema(
    edits: list[tuple[int, float]], beats: int
) -> None:
    """Valid beats with a few samples replaced by edge values (drawing all 140 samples of a
    beat from hypothesis would spend the test's time on generation, not on the rules)."""
    array = np.tile(np.linspace(-1.5, 2.5, BEAT_SAMPLES), (beats, 1))
    for position, value in edits:
        array[position % beats, position] = value
    try:
        BEATS.validate_python(array.tolist())
        accepted = True
    except ValidationError:
        accepted = False
    assert valid_beats(array) == accepted
