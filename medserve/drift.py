"""Data-drift statistics shared by training (reference) and serving (sliding-window PSI).

Training fixes the bins: numeric features get edges at the training deciles, categorical features
one bin per known category; every feature also has a "missing/unknown" bin. Serving keeps a ring
buffer of the last `window` rows' bin indices, so PSI is O(features x bins) per update.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel

PSI_FLOOR = 1e-4  # proportions are floored so that an empty bin gives a finite PSI


class BinnedReference(BaseModel):
    """Fixed bins of one variable and the training share of each bin (last bin = missing)."""

    name: str
    kind: Literal["numeric", "categorical"]
    edges: list[float] = []
    categories: list[float] = []
    expected: list[float]

    @property
    def n_bins(self) -> int:
        return len(self.expected)

    def bin_indices(self, values: np.ndarray) -> np.ndarray:
        """Bin index of each value; NaN and unknown categories fall in the missing bin."""
        missing_bin = self.n_bins - 1
        if self.kind == "numeric":
            idx = np.searchsorted(np.asarray(self.edges), values, side="right")
        else:
            categories = np.asarray(self.categories)  # sorted at build time
            if categories.size == 0:
                return np.full(values.shape, missing_bin, dtype=np.int64)
            idx = np.searchsorted(categories, values).clip(max=len(categories) - 1)
            idx[categories[idx] != values] = missing_bin  # unknown categories
        idx = np.asarray(idx, dtype=np.int64)
        idx[np.isnan(values)] = missing_bin
        return idx


class ReferenceProfile(BaseModel):
    """Everything the drift monitor needs, saved with the model."""

    features: list[BinnedReference]
    score: BinnedReference
    positive_rate: float
    n_rows: int


def _shares(indices: np.ndarray, n_bins: int) -> list[float]:
    counts = np.bincount(indices, minlength=n_bins).astype(float)
    return (counts / max(counts.sum(), 1.0)).tolist()


def bin_numeric(name: str, values: np.ndarray, n_quantiles: int = 10) -> BinnedReference:
    """Reference bins for a numeric variable at its training quantiles."""
    finite = values[~np.isnan(values)]
    qs = np.linspace(0, 1, n_quantiles + 1)[1:-1]
    edges = np.unique(np.quantile(finite, qs)).tolist()
    ref = BinnedReference(name=name, kind="numeric", edges=edges, expected=[0.0] * (len(edges) + 2))
    ref.expected = _shares(ref.bin_indices(values), ref.n_bins)
    return ref


def bin_categorical(name: str, values: np.ndarray) -> BinnedReference:
    """Reference bins for a categorical variable: one per training category."""
    categories = sorted(set(values[~np.isnan(values)].tolist()))
    ref = BinnedReference(
        name=name, kind="categorical", categories=categories, expected=[0.0] * (len(categories) + 1)
    )
    ref.expected = _shares(ref.bin_indices(values), ref.n_bins)
    return ref


def build_reference(
    matrix: np.ndarray,
    names: Sequence[str],
    categorical: set[str],
    scores: np.ndarray,
    labels: np.ndarray,
) -> ReferenceProfile:
    """The drift reference of a training set: per-feature bins plus the score distribution."""
    features = [
        bin_categorical(name, matrix[:, i])
        if name in categorical
        else bin_numeric(name, matrix[:, i])
        for i, name in enumerate(names)
    ]
    return ReferenceProfile(
        features=features,
        score=bin_numeric("score", scores),
        positive_rate=float(np.mean(labels)),
        n_rows=int(matrix.shape[0]),
    )


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index between two bin-share vectors."""
    e = np.maximum(np.asarray(expected, dtype=float), PSI_FLOOR)
    a = np.maximum(np.asarray(actual, dtype=float), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


class DriftSnapshot(BaseModel):
    """Current drift figures of one window."""

    samples: int
    feature_psi: dict[str, float]
    score_psi: float
    positive_rate: float


class DriftMonitor:
    """Sliding-window PSI of recent rows against a `ReferenceProfile` (one per worker).

    Bin counts of all variables live in one flat array (`_offsets` locate each variable), so an
    update is two vectorised `np.add.at` calls whatever its size. `observe` only queues rows;
    they are binned in bulk when a snapshot is taken (or the queue reaches a window), which keeps
    the per-batch cost on the serving hot path to an append.
    """

    def __init__(self, profile: ReferenceProfile, window: int) -> None:
        self.profile = profile
        self.window = window
        self._refs = [*profile.features, profile.score]
        sizes = [ref.n_bins for ref in self._refs]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self._counts = np.zeros(sum(sizes), dtype=np.int64)
        self._ring = np.zeros((window, len(self._refs)), dtype=np.int64)
        self._valid = np.zeros(window, dtype=bool)
        self._positive = np.zeros(window, dtype=bool)
        self._next = 0
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_rows = 0

    def observe(self, matrix: np.ndarray, scores: np.ndarray, predicted: np.ndarray) -> None:
        """Add a batch of rows (features in reference order), their scores and predicted class."""
        self._pending.append((matrix, scores, np.asarray(predicted, dtype=bool)))
        self._pending_rows += len(matrix)
        if self._pending_rows >= self.window:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        matrix = np.concatenate([m for m, _, _ in self._pending])
        scores = np.concatenate([s for _, s, _ in self._pending])
        predicted = np.concatenate([p for _, _, p in self._pending])
        self._pending, self._pending_rows = [], 0
        self._add(matrix, scores, predicted)

    def _add(self, matrix: np.ndarray, scores: np.ndarray, predicted: np.ndarray) -> None:
        columns = [*matrix.T, scores]
        bins = np.stack(
            [ref.bin_indices(col) for ref, col in zip(self._refs, columns, strict=True)], axis=1
        )[-self.window :]
        predicted = predicted[-self.window :]
        slots = (self._next + np.arange(len(bins))) % self.window
        evicted = self._ring[slots][self._valid[slots]]
        np.add.at(self._counts, (evicted + self._offsets).ravel(), -1)
        np.add.at(self._counts, (bins + self._offsets).ravel(), 1)
        self._ring[slots] = bins
        self._valid[slots] = True
        self._positive[slots] = predicted
        self._next = int((self._next + len(bins)) % self.window)

    @property
    def samples(self) -> int:
        """Rows currently in the window."""
        self._flush()
        return int(self._valid.sum())

    def snapshot(self) -> DriftSnapshot:
        """PSI per feature and for the score, and the positive rate, over the current window."""
        self._flush()
        n = max(self.samples, 1)
        values = [
            psi(ref.expected, self._counts[offset : offset + ref.n_bins] / n)
            for ref, offset in zip(self._refs, self._offsets, strict=True)
        ]
        names = [ref.name for ref in self.profile.features]
        return DriftSnapshot(
            samples=self.samples,
            feature_psi=dict(zip(names, values[:-1], strict=True)),
            score_psi=values[-1],
            positive_rate=float(self._positive[self._valid].mean()) if self.samples else 0.0,
        )
