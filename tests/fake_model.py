"""A small served model for in-process tests of the serving layer (no training, no store).

Instances are points `{"x": 0-10, "flag": 0|1}`; the score is x/10, positive when >= 0.5. It
records the size of every batch it predicts, can be told to fail or to be slow, and declares
v2 tensors, a keyed column and an unlogged column like the real models do.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from medserve.drift import ReferenceProfile, build_reference
from medserve.serving.model import Columns, ModelInputs, ServedModel, StoredModel
from medserve.serving.tensors import TensorSpec

SCORE_KEYS = ("low", "high")


class Point(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    x: float = Field(ge=0, le=10)
    flag: int = Field(ge=0, le=1)


class PointAnswer(BaseModel):
    prediction_id: str
    score: float
    positive: bool
    scores: dict[str, float]
    detail: list[float]


def reference(rows: int = 400, seed: int = 0) -> ReferenceProfile:
    rng = np.random.default_rng(seed)
    matrix = np.column_stack([rng.uniform(0, 10, rows), rng.integers(0, 2, rows)])
    scores = matrix[:, 0] / 10
    return build_reference(matrix, ["x", "flag"], {"flag"}, scores, scores >= 0.5)


class FakeModel(ServedModel):
    name = "fake"
    instance_schema = Point
    answer_schema = PointAnswer
    instances_key = "points"
    unlogged_columns = frozenset({"detail"})
    v2_inputs = (
        TensorSpec(name="points", datatype="FP64", shape=[-1, 2], accepted_datatypes=["FP64"]),
    )
    v2_outputs = (
        TensorSpec(name="score", datatype="FP64", shape=[-1]),
        TensorSpec(name="positive", datatype="BOOL", shape=[-1]),
        TensorSpec(name="detail", datatype="FP32", shape=[-1, 3]),
        TensorSpec(name="prediction_id", datatype="BYTES", shape=[-1]),
    )

    def __init__(self, profile: ReferenceProfile | None = None) -> None:
        self.tag = "fake:v1"
        self.reference = profile or reference()
        self.keyed_columns = {"scores": SCORE_KEYS}
        self.batches: list[int] = []
        self.fail_with: Exception | None = None
        self.delay_s = 0.0
        self.trusted_calls = 0

    @classmethod
    def from_store(cls, stored: StoredModel) -> FakeModel:
        return cls(stored.reference)

    def preprocess(self, instances: Sequence[BaseModel]) -> ModelInputs:
        return ModelInputs(np.array([[p.x, p.flag] for p in instances], dtype=np.float64))  # type: ignore[attr-defined]

    def instances_from_tensors(self, tensors: Mapping[str, np.ndarray]) -> list[Any]:
        return [
            {"x": x, "flag": int(f) if f.is_integer() else f} for x, f in tensors["points"].tolist()
        ]

    def trusted_inputs(self, tensors: Mapping[str, np.ndarray]) -> ModelInputs | None:
        self.trusted_calls += 1
        points = tensors["points"]
        x, flag = points[:, 0], points[:, 1]
        if (x >= 0).all() and (x <= 10).all() and np.isin(flag, (0, 1)).all():
            return ModelInputs(np.asarray(points, dtype=np.float64))
        return None

    def predict(self, rows: np.ndarray) -> np.ndarray:
        self.batches.append(len(rows))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        return rows[:, :1] / 10

    def predicted_classes(self, outputs: np.ndarray) -> np.ndarray:
        return (outputs[:, 0] >= 0.5).astype(np.int64)

    def postprocess(self, outputs: np.ndarray, inputs: ModelInputs) -> Columns:
        score = outputs[:, 0]
        return {
            "score": score,
            "positive": score >= 0.5,
            "scores": np.column_stack([1 - score, score]),
            "detail": np.repeat(outputs, 3, axis=1),
        }

    def drift_inputs(self, rows: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, ...]:
        return rows, outputs[:, 0], outputs[:, 0] >= 0.5

    def logged_inputs(self, inputs: ModelInputs) -> list[dict[str, Any]]:
        return [{"x": x, "flag": int(flag)} for x, flag in inputs.rows.tolist()]

    def allowed(self, field: str) -> str | None:
        return {"x": "0-10", "flag": "0 or 1"}.get(field)
