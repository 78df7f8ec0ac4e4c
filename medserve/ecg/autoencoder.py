"""The beat autoencoder as served: min-max normalisation, a dense forward pass in NumPy, MAE.

Training fits the Keras 3 model (`training/ecg_anomaly.py`) and stores its weights next to the
`.keras` file; serving evaluates the same layers with NumPy, so a worker needs no TensorFlow
(hundreds of MB and seconds of start-up per worker). Tests hold the two equal within 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from medserve.ecg.beats import BEAT_SAMPLES

# Encoder 140 -> 32 -> 16 -> 8, decoder 8 -> 16 -> 32 -> 140 (the source's architecture).
HIDDEN_UNITS = (32, 16, 8, 16, 32)
ACTIVATIONS = ("relu", "relu", "relu", "relu", "relu", "sigmoid")
WEIGHTS_FILE = "weights.npz"
SCORER_FILE = "scorer.json"


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0, out=x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-x) of a large negative x overflows to inf and gives 0, which is the right limit.
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


_ACTIVATION_FUNCTIONS = {"relu": _relu, "sigmoid": _sigmoid}


class ScorerParams(BaseModel):
    """Everything besides the weights that turns raw beats into a verdict."""

    model_config = ConfigDict(frozen=True)

    min: float  # min-max normalisation bounds, from the training data
    max: float
    threshold: float  # MAE (normalised units) above which a beat is anomalous
    threshold_k: float  # threshold = mean + k * std of the normal training beats' MAE
    activations: tuple[str, ...] = ACTIVATIONS

    def normalise(self, beats: np.ndarray) -> np.ndarray:
        """Min-max scaling with the training bounds (values outside them are not clipped)."""
        span = np.float32(self.max - self.min)
        return (np.asarray(beats, dtype=np.float32) - np.float32(self.min)) / span


class BeatScorer:
    """Raw beats [n, 140] -> (reconstruction in the input's units, MAE in normalised units)."""

    def __init__(self, params: ScorerParams, layers: list[tuple[np.ndarray, np.ndarray]]) -> None:
        if len(layers) != len(params.activations):
            raise ValueError(f"{len(layers)} layers but {len(params.activations)} activations")
        if layers[0][0].shape[0] != BEAT_SAMPLES or layers[-1][0].shape[1] != BEAT_SAMPLES:
            raise ValueError(f"the autoencoder must map {BEAT_SAMPLES} samples to {BEAT_SAMPLES}")
        self.params = params
        self.layers = [(w.astype(np.float32), b.astype(np.float32)) for w, b in layers]
        self._span = np.float32(params.max - params.min)

    def reconstruct(self, normalised: np.ndarray) -> np.ndarray:
        """The autoencoder's output for normalised beats (float32)."""
        x = np.asarray(normalised, dtype=np.float32)
        for (weights, bias), activation in zip(self.layers, self.params.activations, strict=True):
            x = _ACTIVATION_FUNCTIONS[activation](x @ weights + bias)
        return x

    def score(self, beats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(reconstruction [n, 140] in the input's units, MAE [n] in normalised units)."""
        normalised = self.params.normalise(beats)
        reconstruction = self.reconstruct(normalised)
        mae = np.mean(np.abs(reconstruction - normalised), axis=1)
        return reconstruction * self._span + np.float32(self.params.min), mae

    def with_threshold(self, threshold: float, k: float) -> BeatScorer:
        """The same network with another decision threshold (calibration)."""
        params = self.params.model_copy(update={"threshold": threshold, "threshold_k": k})
        return BeatScorer(params, self.layers)

    def save(self, folder: Path) -> None:
        arrays: dict[str, np.ndarray] = {}
        for i, (weights, bias) in enumerate(self.layers):
            arrays[f"w{i}"], arrays[f"b{i}"] = weights, bias
        np.savez(folder / WEIGHTS_FILE, **arrays)
        (folder / SCORER_FILE).write_text(self.params.model_dump_json(indent=2))

    @classmethod
    def load(cls, folder: Path) -> BeatScorer:
        params = ScorerParams.model_validate_json((folder / SCORER_FILE).read_text())
        with np.load(folder / WEIGHTS_FILE) as arrays:
            layers = [(arrays[f"w{i}"], arrays[f"b{i}"]) for i in range(len(params.activations))]
        return cls(params, layers)


def mae_threshold(mae: np.ndarray, k: float) -> float:
    """mean + k * std of the reconstruction errors of normal beats."""
    return float(np.mean(mae) + k * np.std(mae))
