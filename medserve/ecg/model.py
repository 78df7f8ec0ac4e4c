"""The ECG anomaly model as served: raw beats in, reconstruction + MAE + verdict out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from medserve.drift import ReferenceProfile
from medserve.ecg.autoencoder import BeatScorer
from medserve.ecg.beats import BEAT_SAMPLES, logged_beat
from medserve.ecg.schema import MAX_ABS_SAMPLE, BeatScore, EcgBeat, valid_beats
from medserve.serving.model import Columns, ModelInputs, ServedModel, StoredModel
from medserve.serving.tensors import TensorSpec

MODEL_NAME = "ecg_anomaly"
KERAS_FILE = "autoencoder.keras"
# Beat-level drift features besides the reconstruction error: a gain or baseline change at a
# site (another ECG cart, other filtering) shows here before the anomaly rate moves.
DRIFT_FEATURES = ("peak_to_peak", "mean")
RECONSTRUCTION_DECIMALS = 5  # 10 nV in mV: far below ECG noise, keeps answers small


def drift_features(beats: np.ndarray) -> np.ndarray:
    """[n, len(DRIFT_FEATURES)] per-beat summary values, the same in training and serving."""
    beats = np.asarray(beats, dtype=np.float64)
    return np.column_stack([np.ptp(beats, axis=1), beats.mean(axis=1)])


class EcgAnomalyModel(ServedModel):
    """A loaded autoencoder with its normalisation bounds and threshold.

    Rows are float32 beats [n, 140]; output row per beat: [MAE, reconstruction (140 values in
    the input's units)]. The log keeps the beat and the verdict, not the reconstruction: it is
    recomputed from the logged beat and the model tag (the review page does).
    """

    name = MODEL_NAME
    instance_schema = EcgBeat
    answer_schema = BeatScore
    instances_key = "beats"
    unlogged_columns = frozenset({"reconstruction", "model_tag"})
    v2_inputs = (
        TensorSpec(
            name="beats",
            datatype="FP32",
            shape=[-1, BEAT_SAMPLES],
            accepted_datatypes=["FP32", "FP64"],
        ),
    )
    v2_outputs = (
        TensorSpec(name="reconstruction", datatype="FP32", shape=[-1, BEAT_SAMPLES]),
        TensorSpec(name="mae", datatype="FP32", shape=[-1]),
        TensorSpec(name="anomalous", datatype="BOOL", shape=[-1]),
        TensorSpec(name="threshold", datatype="FP32", shape=[-1]),
        TensorSpec(name="prediction_id", datatype="BYTES", shape=[-1]),
    )

    def __init__(self, tag: str, scorer: BeatScorer, reference: ReferenceProfile) -> None:
        self.tag = tag
        self.scorer = scorer
        self.reference = reference
        self.threshold = scorer.params.threshold

    @classmethod
    def from_store(cls, stored: StoredModel) -> EcgAnomalyModel:
        return cls(stored.tag, BeatScorer.load(stored.folder), stored.reference)

    def preprocess(self, instances: Sequence[BaseModel]) -> ModelInputs:
        return ModelInputs(np.array([beat.root for beat in instances], dtype=np.float32))  # type: ignore[attr-defined]

    def instances_from_tensors(self, tensors: Mapping[str, np.ndarray]) -> list[Any]:
        """`beats` [n, 140] raw samples (the schema rejects NaN and out-of-range values)."""
        return np.asarray(tensors["beats"], dtype=np.float64).tolist()

    def trusted_inputs(self, tensors: Mapping[str, np.ndarray]) -> ModelInputs | None:
        beats = tensors["beats"]
        return ModelInputs(np.asarray(beats, dtype=np.float32)) if valid_beats(beats) else None

    def predict(self, rows: np.ndarray) -> np.ndarray:
        reconstruction, mae = self.scorer.score(rows)
        return np.column_stack([mae, reconstruction])

    def predicted_classes(self, outputs: np.ndarray) -> np.ndarray:
        return (outputs[:, 0] > self.threshold).astype(np.int64)

    def postprocess(self, outputs: np.ndarray, inputs: ModelInputs) -> Columns:
        mae = outputs[:, 0].astype(np.float64)
        count = len(outputs)
        return {
            "anomalous": mae > self.threshold,
            "mae": mae,
            "threshold": np.full(count, self.threshold),
            "model_tag": np.full(count, self.tag, dtype=object),
            "reconstruction": np.round(outputs[:, 1:].astype(np.float64), RECONSTRUCTION_DECIMALS),
        }

    def reconstruct(self, beat: np.ndarray) -> np.ndarray:
        """The reconstruction of one beat, as answered (the review page plots it)."""
        outputs = self.predict(np.asarray(beat, dtype=np.float32)[np.newaxis])
        return np.round(outputs[0, 1:].astype(np.float64), RECONSTRUCTION_DECIMALS)

    def logged_inputs(self, inputs: ModelInputs) -> list[dict[str, Any]]:
        return [logged_beat(beat) for beat in inputs.rows]

    def drift_inputs(self, rows: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, ...]:
        mae = outputs[:, 0]
        return drift_features(rows), mae, mae > self.threshold

    def allowed(self, field: str) -> str | None:
        return f"{BEAT_SAMPLES} finite samples per beat, each within +-{MAX_ABS_SAMPLE:g}"
