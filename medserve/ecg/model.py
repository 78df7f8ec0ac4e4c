"""The ECG anomaly model as served: raw beats in, reconstruction + MAE + verdict out."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from medserve import model_store
from medserve.drift import ReferenceProfile
from medserve.ecg.autoencoder import BeatScorer
from medserve.ecg.beats import BEAT_SAMPLES
from medserve.ecg.schema import BeatScore, EcgBeat
from medserve.serving.model_server import ServedModel
from medserve.serving.v2 import TensorSpec

MODEL_NAME = "ecg_anomaly"
KERAS_FILE = "autoencoder.keras"
# Beat-level drift features besides the reconstruction error: a gain or baseline change at a
# site (another ECG cart, other filtering) shows here before the anomaly rate moves.
DRIFT_FEATURES = ("peak_to_peak", "mean")
EXAMPLE_BEAT_FILE = Path(__file__).with_name("example_beat.json")
RECONSTRUCTION_DECIMALS = 5  # 10 nV in mV: far below ECG noise, keeps answers and log small


def drift_features(beats: np.ndarray) -> np.ndarray:
    """[n, len(DRIFT_FEATURES)] per-beat summary values, the same in training and serving."""
    beats = np.asarray(beats, dtype=np.float64)
    return np.column_stack([np.ptp(beats, axis=1), beats.mean(axis=1)])


class EcgAnomalyModel(ServedModel):
    """A loaded autoencoder with its normalisation bounds and threshold.

    Output row per beat: [MAE, reconstruction (140 values in the input's units)].
    """

    name = MODEL_NAME
    instance_schema = EcgBeat
    instances_key = "beats"
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
    example: list[float] = json.loads(EXAMPLE_BEAT_FILE.read_text())

    def __init__(self, tag: str, scorer: BeatScorer, reference: ReferenceProfile) -> None:
        self.tag = tag
        self.scorer = scorer
        self.reference = reference
        self.threshold = scorer.params.threshold

    @classmethod
    def load(cls, tag: str) -> EcgAnomalyModel:
        full_tag = model_store.resolve_tag(tag)
        return cls(
            tag=full_tag,
            scorer=BeatScorer.load(model_store.model_folder(full_tag)),
            reference=model_store.load_reference(full_tag),
        )

    def preprocess(self, instances: Sequence[BaseModel]) -> np.ndarray:
        return np.array([beat.root for beat in instances], dtype=np.float32)  # type: ignore[attr-defined]

    def predict(self, rows: np.ndarray) -> np.ndarray:
        reconstruction, mae = self.scorer.score(rows)
        # float64 rows: rounded float32 values would print as 0.030150000005960464 in JSON.
        return np.column_stack([mae, reconstruction]).astype(np.float64)

    def postprocess(self, output: np.ndarray, prediction_id: str, instance: BaseModel) -> BeatScore:
        mae = float(output[0])
        return BeatScore(
            prediction_id=prediction_id,
            anomalous=mae > self.threshold,
            mae=mae,
            threshold=self.threshold,
            model_tag=self.tag,
            reconstruction=np.round(output[1:], RECONSTRUCTION_DECIMALS).tolist(),
        )

    def predicted_class(self, output: np.ndarray) -> int:
        return int(output[0] > self.threshold)

    def logged_inputs(self, instance: BaseModel) -> dict[str, Any]:
        return {"beat": instance.root}  # type: ignore[attr-defined]

    def drift_inputs(self, rows: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, ...]:
        mae = outputs[:, 0]
        return drift_features(rows), mae, mae > self.threshold

    def instances_from_tensors(self, tensors: Mapping[str, np.ndarray]) -> list[Any]:
        """`beats` [n, 140] raw samples (the schema rejects NaN and out-of-range values)."""
        return np.asarray(tensors["beats"], dtype=np.float64).tolist()

    @classmethod
    def tensors_from_instances(cls, instances: Sequence[Any]) -> dict[str, np.ndarray]:
        return {"beats": np.asarray(instances, dtype=np.float32).reshape(-1, BEAT_SAMPLES)}

    def tensors_from_answers(self, answers: Sequence[BaseModel]) -> dict[str, np.ndarray]:
        scores = [BeatScore.model_validate(a) for a in answers]
        return {
            "reconstruction": np.array(
                [s.reconstruction for s in scores], dtype=np.float32
            ).reshape(-1, BEAT_SAMPLES),
            "mae": np.array([s.mae for s in scores], dtype=np.float32),
            "anomalous": np.array([s.anomalous for s in scores], dtype=np.bool_),
            "threshold": np.array([s.threshold for s in scores], dtype=np.float32),
            "prediction_id": np.array([s.prediction_id.encode() for s in scores], dtype=object),
        }

    def allowed(self, field: str) -> str | None:
        return f"{BEAT_SAMPLES} finite samples per beat, each within +-100"
