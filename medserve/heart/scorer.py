"""The served form of the heart model: logistic regression with its preprocessing folded in.

NumPy and pydantic only, so that anything (a BentoML worker, a benchmark peer) can evaluate a
trained heart model without scikit-learn.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel


class LinearScorer(BaseModel):
    """Impute, one-hot and logistic regression folded into per-column weights.

    logit = bias + sum(weights * x_filled) + sum over categorical columns of the weight of the
    row's category (an unknown category contributes 0, as `handle_unknown="ignore"` does).
    """

    fill: list[float]
    weights: list[float]
    bias: float
    categorical_columns: list[int]
    category_weights: list[dict[str, float]]

    def model_post_init(self, _context: object) -> None:
        self._fill = np.asarray(self.fill)
        self._weights = np.asarray(self.weights)
        self._lookup = [
            {float(k): v for k, v in weights.items()} for weights in self.category_weights
        ]

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        """[P(class 0), P(class 1)] per row."""
        filled = np.where(np.isnan(rows), self._fill, rows)
        logit = self.bias + filled @ self._weights
        for column, lookup in zip(self.categorical_columns, self._lookup, strict=True):
            logit += np.array([lookup.get(v, 0.0) for v in filled[:, column].tolist()])
        p1 = 1.0 / (1.0 + np.exp(-logit))
        return np.column_stack([1.0 - p1, p1])
