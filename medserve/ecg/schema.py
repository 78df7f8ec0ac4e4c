"""Request and answer schemas of the ECG service (beats, strips, scores)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, RootModel

from medserve.ecg.beats import BEAT_SAMPLES

# Beats are millivolts (ECG5000-style standardised beats stay within a few units). Anything this
# large is a unit mistake (microvolts) or garbage, and min-max scaling would make it meaningless.
MAX_ABS_SAMPLE = 100.0

# Strict floats still take JSON integers; booleans, strings, NaN and infinities are refused.
Sample = Annotated[
    float, Field(strict=True, allow_inf_nan=False, ge=-MAX_ABS_SAMPLE, le=MAX_ABS_SAMPLE)
]


def valid_beats(beats: np.ndarray) -> bool:
    """Every sample of a [n, 140] array passes `EcgBeat`'s rules, checked on the whole array."""
    return bool(
        beats.ndim == 2
        and beats.shape[1] == BEAT_SAMPLES
        and np.isfinite(beats).all()
        and (np.abs(beats) <= MAX_ABS_SAMPLE).all()
    )


class EcgBeat(
    RootModel[Annotated[list[Sample], Field(min_length=BEAT_SAMPLES, max_length=BEAT_SAMPLES)]]
):
    """One beat: 140 raw samples, RR-normalised with the R peak at sample 42, in the units of
    the training data (mV for the synthetic model). The service normalises it itself."""

    model_config = ConfigDict(strict=True)


class BeatScore(BaseModel):
    """The verdict on one beat."""

    prediction_id: str
    anomalous: bool = Field(description="MAE above the model's threshold.")
    mae: float = Field(description="Reconstruction MAE in normalised (0-1) units.")
    threshold: float
    model_tag: str
    reconstruction: list[float] = Field(description="The model's reconstruction, input units.")


class StripRequest(BaseModel):
    """A raw single-lead strip to segment and score."""

    model_config = ConfigDict(extra="forbid", strict=True)

    values: list[Sample] = Field(description="Samples in mV, one lead.", min_length=1)
    sampling_rate_hz: float = Field(ge=100, le=1000)
    include_reconstructions: bool = False


class StripBeat(BaseModel):
    """One beat found in a strip."""

    prediction_id: str
    r_peak_index: int
    r_peak_seconds: float
    anomalous: bool
    mae: float
    reconstruction: list[float] | None = None


class StripSummary(BaseModel):
    duration_seconds: float
    beat_count: int
    heart_rate_bpm: float
    anomalous_beats: int
    anomalous_share: float


class StripResponse(BaseModel):
    model: str
    model_tag: str
    request_id: str
    threshold: float
    summary: StripSummary
    beats: list[StripBeat]
