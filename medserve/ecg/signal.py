"""Single-lead ECG strip checks, cleaning, R-peak detection and beat segmentation, numpy only.

The serving worker imports this module, so it must stay free of scipy, neurokit2, pandas and
sklearn. Training cuts synthetic beats with the same `segment_beats`, so a served strip and a
training strip become beats the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from medserve.ecg.beats import BEAT_SAMPLES

StripErrorCode = Literal["not_finite", "too_short", "too_long", "flat_signal", "no_beats"]

PRE_R_FRACTION = 0.3  # share of the local RR interval kept before the R peak
R_PEAK_SAMPLE = round(PRE_R_FRACTION * BEAT_SAMPLES)  # 42: where R sits in every beat

FLAT_PTP_MV = 0.05  # a cleaned strip spanning less than this has no visible QRS
MIN_HEART_RATE_BPM = 25.0
MAX_HEART_RATE_BPM = 250.0
# Real beats repeat: a beat correlates with the mean of the strip's other beats at >= 0.83 in the
# noisiest synthetic class and about 0.67 in bigeminy with wide inverted PVCs. Beats cut around
# noise-triggered "peaks" (white, Laplace, pink, brown and modulated EMG noise, 3-60 s strips at
# 100-1000 Hz) scored 0.2 in the median and 0.46 at the 99th percentile: 3 strips in 800 passed,
# and 5 in 160 of random spikes (electrode pops) did. RR irregularity cannot make this call:
# noise-triggered RR intervals vary by 16-60 %, atrial fibrillation by 15-35 %, and bigeminy
# alternates short and long intervals.
MIN_BEAT_SIMILARITY = 0.5

# Band edges as (stop, pass) in Hz, with raised-cosine transitions between them: a smooth mask
# keeps the filter's impulse response short (little ringing after a QRS).
_CLEAN_LOW_EDGE = (0.25, 0.75)
_CLEAN_HIGH_EDGE = (45.0, 35.0)
_QRS_LOW_EDGE = (3.0, 7.0)
_QRS_HIGH_EDGE = (18.0, 12.0)
_PAD_SECONDS = 2.0  # reflected padding: longer than the 0.5 Hz filter's impulse response

# neurokit2's "neurokit" QRS detector (Makowski et al., 2021), default parameters.
_SMOOTH_SECONDS = 0.1
_AVERAGE_SECONDS = 0.75
_GRADIENT_THRESHOLD_WEIGHT = 1.5
_MIN_QRS_LENGTH_WEIGHT = 0.4
_REFRACTORY_SECONDS = 0.3
_LEAD_SECONDS = 0.1  # R may lie this far before its gradient region (not in neurokit2)


class StripError(ValueError):
    """A strip that cannot be turned into beats; `code` says why, the message never shows data."""

    def __init__(self, code: StripErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: StripErrorCode = code


@dataclass(frozen=True)
class SegmentedStrip:
    """Beats cut from one strip, with the R peak and local RR interval of each beat."""

    beats: np.ndarray  # float64 [n, BEAT_SAMPLES], cleaned signal in the strip's units (mV)
    r_peaks: np.ndarray  # int64 [n], sample index of each beat's R peak in the strip
    rr_seconds: np.ndarray  # float64 [n], mean of the RR intervals before and after the beat
    heart_rate_bpm: float  # 60 / median RR over all detected peaks


def check_strip(
    signal: np.ndarray, sampling_rate: float, min_seconds: float, max_seconds: float
) -> None:
    """Raise `StripError` unless `signal` is a finite 1-D strip of plausible length and size."""
    if signal.ndim != 1:
        raise ValueError(f"a strip must be one-dimensional, got shape {signal.shape}")
    seconds = len(signal) / sampling_rate
    if seconds < min_seconds:
        raise StripError(
            "too_short", f"the strip lasts {seconds:.2f} s; at least {min_seconds:g} s is needed"
        )
    if seconds > max_seconds:
        raise StripError(
            "too_long", f"the strip lasts {seconds:.2f} s; at most {max_seconds:g} s is accepted"
        )
    if not np.isfinite(signal).all():
        raise StripError("not_finite", "the strip contains NaN or infinite values")
    # Measured after cleaning so that baseline wander alone does not pass for a signal.
    if np.ptp(clean(signal, sampling_rate)) < FLAT_PTP_MV:
        raise StripError(
            "flat_signal",
            f"the strip is flat (less than {FLAT_PTP_MV:g} mV peak to peak after filtering)",
        )


def clean(signal: np.ndarray, sampling_rate: float) -> np.ndarray:
    """Zero-phase 0.5-40 Hz band-pass: removes baseline wander, EMG and mains hum, keeps mV."""
    return _band_pass(signal, sampling_rate, _CLEAN_LOW_EDGE, _CLEAN_HIGH_EDGE)


def detect_r_peaks(signal: np.ndarray, sampling_rate: float) -> np.ndarray:
    """Sample indices (int64, increasing) of the R peaks of a raw strip."""
    return _find_r_peaks(clean(signal, sampling_rate), sampling_rate)


def segment_beats(
    signal: np.ndarray, sampling_rate: float, r_peaks: np.ndarray | None = None
) -> SegmentedStrip:
    """Cut a raw strip into RR-normalised beats of `BEAT_SAMPLES` samples.

    Peaks are detected on the cleaned strip (unless `r_peaks` are given) and beats are cut from
    the cleaned strip too: baseline wander is gone but amplitudes stay in mV. Each beat spans
    R - 0.3 RR to R + 0.7 RR, RR being the mean of the intervals before and after the peak, and is
    resampled linearly to `BEAT_SAMPLES` samples, so R sits at `R_PEAK_SAMPLE` at any heart rate.
    Peaks without a neighbour on both sides, or whose window leaves the strip, give no beat.

    Raises `StripError("no_beats")` when fewer than two beats result, when the heart rate (from
    the median RR of all detected peaks) is outside 25-250 bpm, or when the beats do not repeat:
    the median correlation of each beat with the mean of the other beats is below
    `MIN_BEAT_SIMILARITY`, which is what noise mistaken for QRS complexes gives.
    """
    cleaned = clean(signal, sampling_rate)
    if r_peaks is None:
        peaks = _find_r_peaks(cleaned, sampling_rate)
    else:
        peaks = _checked_peaks(r_peaks, len(cleaned))
    if len(peaks) < 4:  # two interior peaks are needed for two beats
        raise StripError("no_beats", f"only {len(peaks)} R peaks were found in the strip")

    rr = np.diff(peaks).astype(np.float64)
    heart_rate = 60.0 * sampling_rate / float(np.median(rr))
    if not MIN_HEART_RATE_BPM <= heart_rate <= MAX_HEART_RATE_BPM:
        raise StripError(
            "no_beats",
            f"the detected heart rate ({heart_rate:.0f} bpm) is outside "
            f"{MIN_HEART_RATE_BPM:g}-{MAX_HEART_RATE_BPM:g} bpm",
        )

    local_rr = (rr[:-1] + rr[1:]) / 2.0  # for the interior peaks peaks[1:-1]
    centre = peaks[1:-1]
    offsets = (np.arange(BEAT_SAMPLES) - R_PEAK_SAMPLE) / BEAT_SAMPLES
    positions = centre[:, None] + local_rr[:, None] * offsets[None, :]
    inside = (positions[:, 0] >= 0) & (positions[:, -1] <= len(cleaned) - 1)
    if inside.sum() < 2:
        raise StripError("no_beats", f"only {int(inside.sum())} complete beats fit in the strip")
    positions = positions[inside]
    beats = np.interp(positions.ravel(), np.arange(len(cleaned)), cleaned).reshape(positions.shape)
    if _beat_similarity(beats) < MIN_BEAT_SIMILARITY:
        raise StripError(
            "no_beats", "the detected beats do not resemble each other: noise rather than ECG"
        )
    return SegmentedStrip(
        beats=beats,
        r_peaks=centre[inside].astype(np.int64),
        rr_seconds=local_rr[inside] / sampling_rate,
        heart_rate_bpm=heart_rate,
    )


def _beat_similarity(beats: np.ndarray) -> float:
    """Median over beats of the correlation between a beat and the mean of the other beats."""
    others = (beats.sum(axis=0) - beats) / (len(beats) - 1)
    beats = beats - beats.mean(axis=1, keepdims=True)
    others = others - others.mean(axis=1, keepdims=True)
    norms = np.sqrt((beats**2).sum(axis=1) * (others**2).sum(axis=1))
    correlations = (beats * others).sum(axis=1) / np.maximum(norms, np.finfo(np.float64).tiny)
    return float(np.median(correlations))


def _checked_peaks(r_peaks: np.ndarray, length: int) -> np.ndarray:
    peaks = np.asarray(r_peaks)
    if peaks.ndim != 1 or not np.issubdtype(peaks.dtype, np.integer):
        raise ValueError("r_peaks must be a one-dimensional integer array")
    if np.any(np.diff(peaks) <= 0) or np.any(peaks < 0) or np.any(peaks >= length):
        raise ValueError("r_peaks must be strictly increasing sample indices inside the strip")
    return peaks.astype(np.int64)


def _find_r_peaks(cleaned: np.ndarray, sampling_rate: float) -> np.ndarray:
    """neurokit2's default QRS detector, ported to numpy, on an already cleaned strip.

    QRS complexes are where the smoothed absolute gradient of the 5-15 Hz band exceeds 1.5 times
    its 0.75 s moving average; regions shorter than 0.4 times the mean region are dropped, R is
    the maximum of the cleaned strip from 0.1 s before a region to its end, and a peak closer
    than 0.3 s to the previous one is ignored.
    """
    qrs_band = _band_pass(cleaned, sampling_rate, _QRS_LOW_EDGE, _QRS_HIGH_EDGE)
    smooth_gradient = _boxcar(np.abs(np.gradient(qrs_band)), round(_SMOOTH_SECONDS * sampling_rate))
    threshold = _GRADIENT_THRESHOLD_WEIGHT * _boxcar(
        smooth_gradient, round(_AVERAGE_SECONDS * sampling_rate)
    )
    above = smooth_gradient > threshold
    starts = np.flatnonzero(~above[:-1] & above[1:])
    ends = np.flatnonzero(above[:-1] & ~above[1:])
    if len(starts) == 0:
        return np.zeros(0, dtype=np.int64)
    ends = ends[ends > starts[0]]
    count = min(len(starts), len(ends))
    starts, ends = starts[:count], ends[:count]
    keep = (ends - starts) >= _MIN_QRS_LENGTH_WEIGHT * np.mean(ends - starts)

    refractory = round(_REFRACTORY_SECONDS * sampling_rate)
    # A wide QRS rises slowly and falls steeply, so its gradient region can start after the R
    # peak, on the downstroke: R is looked for from a little before the region.
    lead = round(_LEAD_SECONDS * sampling_rate)
    peaks: list[int] = []
    for start, end in zip(starts[keep], ends[keep], strict=True):
        first = max(start - lead, 0)
        peak = int(first + np.argmax(cleaned[first:end]))
        # A maximum on the strip's first or last sample belongs to a complex cut by the edge.
        on_edge = peak in (0, len(cleaned) - 1)
        if not on_edge and (not peaks or peak - peaks[-1] > refractory):
            peaks.append(peak)
    return np.asarray(peaks, dtype=np.int64)


def _boxcar(values: np.ndarray, size: int) -> np.ndarray:
    """Centred moving average with edge values repeated (scipy's uniform_filter1d 'nearest')."""
    size = max(size, 1)
    before = size // 2
    padded = np.concatenate(
        [np.full(before, values[0]), values, np.full(size - 1 - before, values[-1])]
    )
    sums = np.cumsum(np.concatenate([[0.0], padded]))
    return (sums[size:] - sums[:-size]) / size


def _band_pass(
    signal: np.ndarray,
    sampling_rate: float,
    low_edge: tuple[float, float],
    high_edge: tuple[float, float],
) -> np.ndarray:
    """Zero-phase FFT band-pass with raised-cosine transitions given as (stop, pass) in Hz."""
    values = np.asarray(signal, dtype=np.float64)
    n = len(values)
    # A least-squares line is removed first (a line through the end samples would absorb
    # whatever wave the strip ends on), then each end is mirrored: the padding continues the
    # strip's level without a step, whatever wave the strip ends on.
    time = np.arange(n) - (n - 1) / 2.0
    slope = float(time @ values) / max(float(time @ time), 1.0)
    detrended = values - values.mean() - slope * time
    pad = min(n - 1, round(_PAD_SECONDS * sampling_rate))
    left = detrended[pad:0:-1]
    right = detrended[-2 : -pad - 2 : -1]
    # The far ends of the padding fade to zero, hiding the jump where the FFT wraps around.
    fade = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, pad))
    padded = np.concatenate([left * fade, detrended, right * fade[::-1]])

    # A power-of-two length keeps the FFT fast whatever the strip length; the faded padding
    # already ends at zero, so the extra zeros add no edge.
    n_fft = 1 << (len(padded) - 1).bit_length()
    spectrum = np.fft.rfft(padded, n=n_fft)
    frequencies = np.fft.rfftfreq(n_fft, d=1.0 / sampling_rate)
    mask = _ramp(frequencies, *low_edge) * _ramp(frequencies, *high_edge)
    filtered = np.fft.irfft(spectrum * mask, n=n_fft)
    # The removed line lies below the pass band, so it is not added back.
    return filtered[pad : pad + n]


def _ramp(frequencies: np.ndarray, stop: float, passing: float) -> np.ndarray:
    """Raised-cosine gain: 0 at and beyond `stop`, 1 at and beyond `passing` (either direction)."""
    position = np.clip((frequencies - stop) / (passing - stop), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * position)
