"""Training side of the heart model: the scikit-learn pipeline, and its compilation to a
`LinearScorer` that serving evaluates with NumPy alone."""

from __future__ import annotations

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from medserve.heart.codes import FEATURES
from medserve.heart.features import BINARY, CATEGORICAL, NUMERIC
from medserve.heart.scorer import LinearScorer


def build_pipeline(c: float, seed: int) -> Pipeline:
    """Impute + scale numbers, impute + one-hot codes, then L2 logistic regression.

    It takes the float64 matrix of `features.to_matrix`, so the same fitted file also serves
    plain-array peers such as MLServer.
    """
    categories = [sorted(FEATURES[i].codes) for i in CATEGORICAL]
    preprocess = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), NUMERIC),
            ("binary", "passthrough", BINARY),
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(categories=categories, handle_unknown="ignore"),
                ),
                CATEGORICAL,
            ),
        ]
    )
    classifier = LogisticRegression(C=c, max_iter=1000, random_state=seed)
    return Pipeline([("preprocess", preprocess), ("classifier", classifier)])


def compile_pipeline(pipeline: Pipeline) -> LinearScorer:
    """The fitted pipeline as one affine map per feature (exactly the same probabilities)."""
    preprocess: ColumnTransformer = pipeline.named_steps["preprocess"]
    classifier: LogisticRegression = pipeline.named_steps["classifier"]
    coef = classifier.coef_[0]
    numeric_imputer, scaler = preprocess.named_transformers_["numeric"].steps
    cat_imputer, encoder = preprocess.named_transformers_["categorical"].steps
    n_num, n_bin = len(NUMERIC), len(BINARY)

    fill = np.zeros(len(FEATURES))
    fill[NUMERIC] = numeric_imputer[1].statistics_
    fill[CATEGORICAL] = cat_imputer[1].statistics_
    # Numeric: coef * (x - mean) / scale, folded into a weight and a bias term.
    weights = np.zeros(len(FEATURES))
    weights[NUMERIC] = coef[:n_num] / scaler[1].scale_
    weights[BINARY] = coef[n_num : n_num + n_bin]
    scaled_means = coef[:n_num] * scaler[1].mean_ / scaler[1].scale_
    bias = float(classifier.intercept_[0] - np.sum(scaled_means))
    offset = n_num + n_bin
    category_weights = []
    for cats in encoder[1].categories_:
        block = coef[offset : offset + len(cats)]
        category_weights.append({str(cat): float(w) for cat, w in zip(cats, block, strict=True)})
        offset += len(cats)
    return LinearScorer(
        fill=fill.tolist(),
        weights=weights.tolist(),
        bias=bias,
        categorical_columns=CATEGORICAL,
        category_weights=category_weights,
    )
