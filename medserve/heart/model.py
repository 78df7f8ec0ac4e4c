"""The heart model as served: a compiled linear scorer evaluated with NumPy.

Training (`medserve.heart.pipeline`) fits a scikit-learn pipeline and compiles it into a
`LinearScorer`; serving loads only the scorer, so a worker imports neither scikit-learn nor SciPy
(seconds of start-up and ~100 MB per worker saved) and scores a batch with one matrix product.
The pickled pipeline is stored next to it for audits and for plain-array peers such as MLServer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from medserve import model_store
from medserve.drift import ReferenceProfile
from medserve.heart.codes import CLASS_LABELS, FEATURE_NAMES, FEATURES_BY_NAME, FeatureSpec
from medserve.heart.features import to_matrix
from medserve.heart.schema import EXAMPLE_PATIENT, HeartPatient, HeartPrediction
from medserve.heart.scorer import LinearScorer
from medserve.serving.model_server import ServedModel
from medserve.serving.v2 import TensorSpec

MODEL_NAME = "heart_risk"
PIPELINE_FILE = "pipeline.joblib"
SCORER_FILE = "scorer.json"
DECISION_THRESHOLD = 0.5  # P(CAD) at or above which class 1 is answered


class HeartRiskModel(ServedModel):
    """A loaded heart model: the fitted pipeline plus what serving needs from the store."""

    name = MODEL_NAME
    instance_schema = HeartPatient
    instances_key = "patients"
    v2_inputs = (
        TensorSpec(
            name="features",
            datatype="FP64",
            shape=[-1, len(FEATURE_NAMES)],
            accepted_datatypes=["FP64", "FP32", "INT64", "INT32"],
        ),
    )
    example = EXAMPLE_PATIENT
    v2_outputs = (
        TensorSpec(name="probabilities", datatype="FP64", shape=[-1, len(CLASS_LABELS)]),
        TensorSpec(name="class", datatype="INT64", shape=[-1]),
        TensorSpec(name="prediction_id", datatype="BYTES", shape=[-1]),
    )

    def __init__(self, tag: str, scorer: LinearScorer, reference: ReferenceProfile) -> None:
        self.tag = tag
        self.scorer = scorer
        self.reference = reference

    @classmethod
    def load(cls, tag: str) -> HeartRiskModel:
        """Load a stored model by tag (`heart_risk:latest` works)."""
        full_tag = model_store.resolve_tag(tag)
        folder = model_store.model_folder(full_tag)
        return cls(
            tag=full_tag,
            scorer=LinearScorer.model_validate_json((folder / SCORER_FILE).read_text()),
            reference=model_store.load_reference(full_tag),
        )

    def preprocess(self, instances: Sequence[BaseModel]) -> np.ndarray:
        return to_matrix(instance.model_dump() for instance in instances)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Class probabilities [P(no CAD), P(CAD)] per row."""
        return self.scorer.predict_proba(rows)

    def postprocess(
        self, output: np.ndarray, prediction_id: str, instance: BaseModel
    ) -> HeartPrediction:
        predicted = self.predicted_class(output)
        return HeartPrediction(
            prediction_id=prediction_id,
            predicted_class=predicted,
            label=CLASS_LABELS[predicted],
            probabilities={label: float(p) for label, p in zip(CLASS_LABELS, output, strict=True)},
        )

    def predicted_class(self, output: np.ndarray) -> int:
        return int(output[1] >= DECISION_THRESHOLD)

    def drift_inputs(self, rows: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, ...]:
        return rows, outputs[:, 1], outputs[:, 1] >= DECISION_THRESHOLD

    def instances_from_tensors(self, tensors: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
        """`features` [n, 13] in `FEATURE_NAMES` order, Kaggle codes, NaN = missing."""
        rows = np.asarray(tensors["features"], dtype=np.float64)
        return [
            {
                name: _json_value(FEATURES_BY_NAME[name], v)
                for name, v in zip(FEATURE_NAMES, row, strict=True)
            }
            for row in rows.tolist()
        ]

    @classmethod
    def tensors_from_instances(cls, instances: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
        return {"features": to_matrix(instances)}

    def tensors_from_answers(self, answers: Sequence[BaseModel]) -> dict[str, np.ndarray]:
        predictions = [HeartPrediction.model_validate(a) for a in answers]
        return {
            "probabilities": np.array(
                [[p.probabilities[label] for label in CLASS_LABELS] for p in predictions],
                dtype=np.float64,
            ).reshape(-1, len(CLASS_LABELS)),
            "class": np.array([p.predicted_class for p in predictions], dtype=np.int64),
            "prediction_id": np.array(
                [p.prediction_id.encode() for p in predictions], dtype=object
            ),
        }

    def allowed(self, field: str) -> str | None:
        spec = FEATURES_BY_NAME.get(field)
        return spec.allowed_text() if spec else None


def _json_value(spec: FeatureSpec, value: float) -> int | float | None:
    """A tensor element as the JSON API would carry it: codes and counts as ints, NaN as null
    (missing) for coded features; anything else stays a float for the schema to judge."""
    if spec.codes or spec.integer:
        if math.isnan(value):
            return None
        return int(value) if value.is_integer() else value
    return value
