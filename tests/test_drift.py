"""Drift statistics: reference bins, PSI, and the sliding window."""

from __future__ import annotations

import numpy as np
import pytest

from medserve.drift import DriftMonitor, bin_categorical, bin_numeric, build_reference, psi


def test_psi_is_zero_for_identical_and_grows_with_shift() -> None:
    base = [0.25, 0.25, 0.25, 0.25]
    assert psi(base, base) == pytest.approx(0.0)
    assert 0 < psi(base, [0.3, 0.25, 0.25, 0.2]) < psi(base, [0.7, 0.1, 0.1, 0.1])


def test_empty_bins_give_a_finite_psi() -> None:
    assert np.isfinite(psi([0.5, 0.5, 0.0], [0.0, 0.0, 1.0]))


def test_numeric_bins_are_training_deciles_plus_missing() -> None:
    values = np.arange(1000, dtype=float)
    ref = bin_numeric("x", np.append(values, np.nan))
    assert len(ref.edges) == 9
    assert ref.expected[-1] == pytest.approx(1 / 1001)  # the missing bin
    assert sum(ref.expected) == pytest.approx(1.0)


def test_unknown_category_and_nan_fall_in_the_missing_bin() -> None:
    ref = bin_categorical("c", np.array([0.0, 1.0, 1.0, 2.0]))
    assert ref.bin_indices(np.array([1.0, 7.0, np.nan])).tolist() == [1, 3, 3]


def _monitor(window: int = 100) -> tuple[DriftMonitor, np.random.Generator]:
    rng = np.random.default_rng(0)
    train = np.column_stack([rng.normal(50, 10, 5000), rng.integers(0, 3, 5000).astype(float)])
    scores = rng.uniform(0, 1, 5000)
    profile = build_reference(train, ["age", "code"], {"code"}, scores, scores > 0.5)
    return DriftMonitor(profile, window), rng


def test_in_distribution_window_stays_below_threshold_and_shift_crosses_it() -> None:
    monitor, rng = _monitor(window=500)
    rows = np.column_stack([rng.normal(50, 10, 500), rng.integers(0, 3, 500).astype(float)])
    s = rng.uniform(0, 1, 500)
    monitor.observe(rows, s, s > 0.5)
    calm = monitor.snapshot()
    assert calm.samples == 500
    assert max(calm.feature_psi.values()) < 0.1
    shifted = np.column_stack([rng.normal(75, 10, 500), np.full(500, 2.0)])
    monitor.observe(shifted, s, s > 0.5)
    drifted = monitor.snapshot()
    assert drifted.feature_psi["age"] > 0.2
    assert drifted.feature_psi["code"] > 0.2


def test_window_evicts_old_rows() -> None:
    monitor, rng = _monitor(window=50)
    high = np.column_stack([np.full(50, 200.0), np.zeros(50)])
    monitor.observe(high, np.ones(50), np.ones(50, dtype=bool))
    assert monitor.snapshot().positive_rate == 1.0
    normal = np.column_stack([rng.normal(50, 10, 30), np.zeros(30)])
    monitor.observe(normal, np.zeros(30), np.zeros(30, dtype=bool))
    snap = monitor.snapshot()
    assert snap.samples == 50
    assert snap.positive_rate == pytest.approx(20 / 50)
    # Counts stay consistent with the ring after eviction.
    assert monitor._counts.sum() == 50 * 3
