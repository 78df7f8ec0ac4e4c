"""The heart model: a scikit-learn pipeline over the canonical feature matrix.

The pipeline takes the float64 matrix of `data.to_matrix` (columns in `FEATURE_NAMES` order, NaN
for missing), so the same fitted file also serves plain-array peers such as MLServer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import joblib
import numpy as np
from pydantic import BaseModel
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from medserve import model_store
from medserve.drift import ReferenceProfile
from medserve.heart.codes import CLASS_LABELS, FEATURE_NAMES, FEATURES, FEATURES_BY_NAME
from medserve.heart.data import to_matrix
from medserve.heart.schema import HeartPatient, HeartPrediction
from medserve.serving.model_server import ServedModel

MODEL_NAME = "heart_risk"
PIPELINE_FILE = "pipeline.joblib"

NUMERIC = [i for i, f in enumerate(FEATURES) if f.kind == "numeric"]
BINARY = [i for i, f in enumerate(FEATURES) if f.kind == "binary"]
CATEGORICAL = [i for i, f in enumerate(FEATURES) if f.kind == "categorical"]
CATEGORICAL_NAMES = {FEATURE_NAMES[i] for i in CATEGORICAL}


def build_pipeline(c: float, seed: int) -> Pipeline:
    """Impute + scale numbers, impute + one-hot codes, then L2 logistic regression."""
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


class HeartRiskModel(ServedModel):
    """A loaded heart model: the fitted pipeline plus what serving needs from the store."""

    name = MODEL_NAME
    instance_schema = HeartPatient
    instances_key = "patients"

    def __init__(self, tag: str, pipeline: Pipeline, reference: ReferenceProfile) -> None:
        self.tag = tag
        self.pipeline = pipeline
        self.reference = reference

    @classmethod
    def load(cls, tag: str) -> HeartRiskModel:
        """Load a stored model by tag (`heart_risk:latest` works)."""
        full_tag = model_store.resolve_tag(tag)
        folder = model_store.model_folder(full_tag)
        return cls(
            tag=full_tag,
            pipeline=joblib.load(folder / PIPELINE_FILE),
            reference=model_store.load_reference(full_tag),
        )

    def preprocess(self, instances: Sequence[BaseModel]) -> np.ndarray:
        return to_matrix(instance.model_dump() for instance in instances)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Class probabilities [P(no CAD), P(CAD)] per row."""
        return self.pipeline.predict_proba(rows)

    def postprocess(self, output: np.ndarray, prediction_id: str) -> HeartPrediction:
        predicted = self.predicted_class(output)
        return HeartPrediction(
            prediction_id=prediction_id,
            predicted_class=predicted,
            label=CLASS_LABELS[predicted],
            probabilities={label: float(p) for label, p in zip(CLASS_LABELS, output, strict=True)},
        )

    def predicted_class(self, output: np.ndarray) -> int:
        return int(output[1] >= 0.5)

    def drift_inputs(self, rows: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, ...]:
        return rows, outputs[:, 1], outputs[:, 1] >= 0.5

    def allowed(self, field: str) -> str | None:
        spec = FEATURES_BY_NAME.get(field)
        return spec.allowed_text() if spec else None


def save_pipeline(pipeline: Pipeline, folder: Path | str) -> None:
    """Write the fitted pipeline into a model folder."""
    joblib.dump(pipeline, Path(folder) / PIPELINE_FILE)
