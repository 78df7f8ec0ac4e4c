"""Deterministic synthetic ECG beats: normal and five abnormal classes, each in three severities.

Strips come from neurokit2's ECGSYN model (McSharry et al., 2003), whose P, Q, R, S and T waves
are Gaussians placed at angles `ti` with amplitudes `ai` and widths `bi` on a limit cycle.
Abnormal classes change those parameters (wide QRS, inverted T) or the simulated strip (ST
offsets, low amplitude with noise); `MORPHOLOGIES` holds every class and severity in one table.
Strips are cut into beats by `medserve.ecg.signal.segment_beats`, exactly as served strips are.

Training-side only: the serving worker never imports this module (it needs neurokit2 and scipy).

Timing (2-core VM, Python 3.11, neurokit2 0.2.13): the default config (7000 beats) needs about
390 strips of 15 s, each 0.15-0.25 s of CPU in ECGSYN's ODE solver (95 % of the time). `generate`
with two workers took 65 s on an otherwise idle machine, about 10 s of it the forkserver
importing neurokit2, and 90-110 s while another test suite shared the cores; one worker used
97 s of CPU. `load_or_generate` pays this once per config.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Literal, NamedTuple

import neurokit2 as nk
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from medserve.ecg.beats import NORMAL, BeatSet
from medserve.ecg.signal import StripError, detect_r_peaks, segment_beats

# Part of the cache key: bump whenever the beats for a given config change, including changes
# to the cleaning or segmentation in medserve.ecg.signal.
GENERATOR_VERSION = 2

Severity = Literal["mild", "moderate", "severe"]
SEVERITIES: tuple[Severity, ...] = ("mild", "moderate", "severe")

Range = tuple[float, float]  # sampled uniformly once per strip

# ECGSYN's defaults for the P, Q, R, S and T waves (angles in degrees).
_TI = np.array([-70.0, -15.0, 0.0, 15.0, 100.0])
_AI = np.array([1.2, -5.0, 30.0, -7.5, 0.75])
_BI = np.array([0.25, 0.1, 0.1, 0.1, 0.4])
_P, _Q, _R, _S, _T = range(5)

_J_POINT_SECONDS = 0.04  # J point after R, where the ST segment starts
_ST_EDGE_SECONDS = 0.02  # rise of the ST offset around the J point
_ST_FADE_SECONDS = 0.1  # the offset fades into the T wave over this long


class Morphology(BaseModel):
    """How strips of one class and severity differ from ECGSYN's normal beat.

    Each range is sampled once per strip, so beats of one strip share their shape. The defaults
    describe a normal strip: small person-to-person variation around ECGSYN's beat.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    qrs_width: Range = (0.9, 1.1)  # multiplies the Q, R and S widths and the Q/S spacing
    r_amplitude: Range = (0.9, 1.1)  # multiplies the R area (kept constant as the QRS widens)
    s_amplitude: Range = (0.9, 1.1)  # multiplies the S area
    p_amplitude: Range = (0.8, 1.2)  # multiplies the P amplitude (0: no P wave)
    t_amplitude: Range = (0.6, 0.9)  # ECGSYN's T amplitude `ai` (0.75 by default)
    st_offset_mv: Range = (0.0, 0.0)  # ST level at the J point, added after simulation
    st_downslope: float = 0.0  # the ST offset grows by this share of itself towards the T wave
    amplitude: Range = (0.8, 1.2)  # overall gain of the strip
    emg_noise_mv: Range = (0.0, 0.0)  # standard deviation of broadband (muscle) noise
    wander_mv: Range = (0.0, 0.0)  # amplitude of respiratory baseline wander
    hum_mv: Range = (0.0, 0.0)  # amplitude of 50 or 60 Hz mains interference


def _abnormal(**changes: object) -> Morphology:
    return Morphology.model_validate({**Morphology().model_dump(), **changes})


# Mild severities are deliberately subtle: within a few tenths of a millivolt or a few tens of
# milliseconds of normal, as in early or borderline findings.
MORPHOLOGIES: dict[str, dict[str, Morphology]] = {
    # Ventricular-type beat: wide QRS, larger S, T opposite to the QRS, P fading away.
    "pvc_wide_qrs": {
        "mild": _abnormal(qrs_width=(1.5, 1.7), s_amplitude=(1.2, 1.5), t_amplitude=(0.25, 0.45)),
        "moderate": _abnormal(
            qrs_width=(2.0, 2.4),
            r_amplitude=(0.7, 0.9),
            s_amplitude=(1.8, 2.2),
            p_amplitude=(0.3, 0.6),
            t_amplitude=(-0.5, -0.3),
        ),
        "severe": _abnormal(
            qrs_width=(2.8, 3.2),
            r_amplitude=(0.5, 0.7),
            s_amplitude=(2.5, 3.0),
            p_amplitude=(0.0, 0.0),
            t_amplitude=(-0.9, -0.7),
        ),
    },
    "inverted_t": {
        "mild": _abnormal(t_amplitude=(-0.2, -0.1)),
        "moderate": _abnormal(t_amplitude=(-0.5, -0.35)),
        "severe": _abnormal(t_amplitude=(-0.85, -0.7)),
    },
    "st_elevation": {
        "mild": _abnormal(st_offset_mv=(0.05, 0.1)),
        "moderate": _abnormal(st_offset_mv=(0.15, 0.2)),
        "severe": _abnormal(st_offset_mv=(0.28, 0.32)),
    },
    "st_depression": {
        "mild": _abnormal(st_offset_mv=(-0.1, -0.05)),
        "moderate": _abnormal(st_offset_mv=(-0.2, -0.15), st_downslope=0.3),
        "severe": _abnormal(st_offset_mv=(-0.32, -0.28), st_downslope=0.6),
    },
    "low_amplitude_noisy": {
        "mild": _abnormal(
            amplitude=(0.45, 0.5),
            emg_noise_mv=(0.01, 0.02),
            wander_mv=(0.05, 0.1),
            hum_mv=(0.01, 0.02),
        ),
        "moderate": _abnormal(
            amplitude=(0.35, 0.4),
            emg_noise_mv=(0.02, 0.04),
            wander_mv=(0.1, 0.2),
            hum_mv=(0.02, 0.05),
        ),
        "severe": _abnormal(
            amplitude=(0.25, 0.3),
            emg_noise_mv=(0.04, 0.06),
            wander_mv=(0.2, 0.3),
            hum_mv=(0.05, 0.1),
        ),
    },
}
ABNORMAL_CLASSES: tuple[str, ...] = tuple(MORPHOLOGIES)
NORMAL_MORPHOLOGY = Morphology()


class SyntheticEcgConfig(BaseModel):
    """What `generate` produces; the cache key of `load_or_generate`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 21
    normal_beats: int = Field(default=4000, ge=0)
    abnormal_beats_per_class: int = Field(default=600, ge=0)  # split evenly over the severities
    # ECGSYN integrates up to the next power of two seconds (plus a beat), so 15 s strips cost
    # the same as 12 s ones and 16 s twice as much.
    strip_seconds: float = Field(default=15.0, ge=5.0, le=60.0)
    sampling_rates: tuple[int, ...] = Field(default=(250, 360, 500), min_length=1)
    heart_rate_bpm: Range = (55.0, 110.0)
    heart_rate_std_bpm: Range = (0.5, 3.0)
    noise_mv: Range = (0.005, 0.05)  # ECGSYN's Laplace measurement noise, every class


class _StripTask(NamedTuple):
    config: SyntheticEcgConfig
    group: int
    attempt: int
    kind: str
    severity: str


_Mapper = Callable[[Callable[[_StripTask], np.ndarray | None], list[_StripTask]], Iterable]


def simulate_strip(
    kind: str, severity: str, seconds: float, sampling_rate: float, seed: int
) -> np.ndarray:
    """One raw strip (mV) of class `kind` ("normal" with severity ""), default rhythm ranges."""
    return _simulate(
        _morphology(kind, severity),
        SyntheticEcgConfig(),
        seconds,
        sampling_rate,
        np.random.default_rng(seed),
    )


def generate(config: SyntheticEcgConfig, workers: int | None = None) -> BeatSet:
    """Beats of every class, exactly as many as `config` asks, identical for an identical config.

    Strips are simulated on `workers` processes (default: one per CPU); the result does not
    depend on the number of workers.
    """
    groups: list[tuple[str, str, int]] = [(NORMAL, "", config.normal_beats)]
    per_severity = np.array_split(np.arange(config.abnormal_beats_per_class), len(SEVERITIES))
    for kind in ABNORMAL_CLASSES:
        groups += [(kind, s, len(part)) for s, part in zip(SEVERITIES, per_severity, strict=True)]
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        strips = _simulate_groups(config, groups, map)
    else:
        # forkserver, not fork: the caller may have TensorFlow's threads running (a Ray worker
        # reused for training), and forking those can deadlock. The server imports neurokit2 once
        # and forks the workers from that clean process.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            strips = _simulate_groups(
                config, groups, lambda task, tasks: pool.map(task, tasks, chunksize=4)
            )

    parts = []
    for (kind, severity, _), group_strips in zip(groups, strips, strict=True):
        for beats in group_strips:
            n = len(beats)
            record = np.full(n, len(parts), dtype=np.int64)
            parts.append(BeatSet(beats, np.full(n, kind), np.full(n, severity), record))
    return BeatSet.concat(parts)


def _simulate_groups(
    config: SyntheticEcgConfig, groups: list[tuple[str, str, int]], mapper: _Mapper
) -> list[list[np.ndarray]]:
    """Beats (float32) of each group's strips, trimmed to the group's wanted count.

    Work goes in rounds: each round asks for as many new strips per group as should cover what
    the group still misses, and results are used in task order, so the outcome is the same
    however `mapper` spreads the tasks over processes.
    """
    expected = max(1.0, config.strip_seconds * np.mean(config.heart_rate_bpm) / 60.0 - 3.0)
    strips: list[list[np.ndarray]] = [[] for _ in groups]
    have = [0] * len(groups)
    attempts = [0] * len(groups)
    failures = [0] * len(groups)
    while True:
        tasks = []
        for index, (kind, severity, wanted) in enumerate(groups):
            count = int(np.ceil((wanted - have[index]) / expected)) if have[index] < wanted else 0
            tasks += [
                _StripTask(config, index, attempts[index] + k, kind, severity) for k in range(count)
            ]
            attempts[index] += count
        if not tasks:
            return strips
        for task, beats in zip(tasks, mapper(_strip_beats, tasks), strict=True):
            index = task.group
            wanted = groups[index][2]
            if beats is None:
                failures[index] += 1
                if failures[index] > max(10, len(strips[index])):
                    raise RuntimeError(
                        f"synthetic {task.kind} {task.severity} strips keep failing segmentation"
                    )
            elif have[index] < wanted:
                strips[index].append(beats[: wanted - have[index]])
                have[index] += len(strips[index][-1])


def _strip_beats(task: _StripTask) -> np.ndarray | None:
    """The beats (float32) of one strip, or None when the strip yields no beats."""
    # The seed depends on the group and attempt only: one group never shifts another's strips.
    rng = np.random.default_rng(
        np.random.SeedSequence([task.config.seed, task.group, task.attempt])
    )
    sampling_rate = float(rng.choice(task.config.sampling_rates))
    strip = _simulate(
        _morphology(task.kind, task.severity),
        task.config,
        task.config.strip_seconds,
        sampling_rate,
        rng,
    )
    try:
        return segment_beats(strip, sampling_rate).beats.astype(np.float32)
    except StripError:
        return None


def load_or_generate(
    config: SyntheticEcgConfig, cache_dir: Path, workers: int | None = None
) -> BeatSet:
    """`generate(config)`, cached as an .npz in `cache_dir` keyed by the config and generator."""
    key = hashlib.sha256(f"{GENERATOR_VERSION}\n{config.model_dump_json()}".encode()).hexdigest()
    path = cache_dir / f"synthetic-ecg-{key[:20]}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            return BeatSet(data["beats"], data["label"], data["severity"], data["record"])
    beat_set = generate(config, workers)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Written next to the target and renamed, so readers never see a half-written cache file.
    handle, temporary = tempfile.mkstemp(dir=cache_dir, suffix=".npz.tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(
                file,
                beats=beat_set.beats,
                label=beat_set.label.astype(str),
                severity=beat_set.severity.astype(str),
                record=beat_set.record,
            )
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return beat_set


def _morphology(kind: str, severity: str) -> Morphology:
    if kind == NORMAL and severity == "":
        return NORMAL_MORPHOLOGY
    if kind not in MORPHOLOGIES or severity not in MORPHOLOGIES[kind]:
        raise ValueError(f"unknown synthetic ECG class {kind!r} with severity {severity!r}")
    return MORPHOLOGIES[kind][severity]


def _simulate(
    morphology: Morphology,
    config: SyntheticEcgConfig,
    seconds: float,
    sampling_rate: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Simulate with `morphology`'s waves and `config`'s rhythm ranges, then add ST, gain, noise."""
    width = rng.uniform(*morphology.qrs_width)
    ti = _TI.copy()
    ti[[_Q, _S]] *= width  # Q and S move out with the wider R so the waves stay distinct
    bi = _BI.copy()
    bi[[_Q, _R, _S]] *= width
    ai = _AI.copy()
    # A wave's height in ECGSYN grows with ai * bi**2; dividing by width**2 keeps the QRS area.
    ai[[_Q, _R, _S]] /= width**2
    ai[_R] *= rng.uniform(*morphology.r_amplitude)
    ai[_S] *= rng.uniform(*morphology.s_amplitude)
    ai[_P] *= rng.uniform(*morphology.p_amplitude)
    ai[_T] = rng.uniform(*morphology.t_amplitude)

    strip = nk.ecg_simulate(
        duration=seconds,
        sampling_rate=int(sampling_rate),
        noise=0.0,
        heart_rate=rng.uniform(*config.heart_rate_bpm),
        heart_rate_std=rng.uniform(*config.heart_rate_std_bpm),
        method="ecgsyn",
        random_state=np.random.default_rng(rng.integers(2**63)),
        ti=tuple(ti),
        ai=tuple(ai),
        bi=tuple(bi),
    )
    st_offset = rng.uniform(*morphology.st_offset_mv)
    if st_offset != 0.0:
        strip = strip + _st_offset(strip, sampling_rate, st_offset, morphology.st_downslope)
    strip = strip * rng.uniform(*morphology.amplitude)
    strip = nk.signal_distort(
        strip,
        sampling_rate=int(sampling_rate),
        noise_shape="laplace",
        noise_amplitude=rng.uniform(*config.noise_mv),
        noise_frequency=[5, 10, 100],
        random_state=np.random.default_rng(rng.integers(2**63)),
        silent=True,
    )
    return strip + _interference(morphology, len(strip), sampling_rate, rng)


def _st_offset(
    strip: np.ndarray, sampling_rate: float, level_mv: float, downslope: float
) -> np.ndarray:
    """An ST offset after every R peak: from the J point, fading out into the T wave's upstroke.

    The offset rises around the J point, holds (growing by `downslope` for a down-sloping
    segment) and fades to zero at R + 0.28 sqrt(RR) s, about where ECGSYN's T wave peaks.
    """
    t = np.arange(len(strip)) / sampling_rate
    peaks = detect_r_peaks(strip, sampling_rate)
    rr = np.diff(peaks) / sampling_rate
    offset = np.zeros(len(strip))
    for index, peak in enumerate(peaks):
        local_rr = rr[min(index, len(rr) - 1)]
        start = peak / sampling_rate + _J_POINT_SECONDS
        end = peak / sampling_rate + 0.28 * np.sqrt(local_rr)  # ends like QT scales (Bazett)
        rise = _smooth_step((t - start) / _ST_EDGE_SECONDS + 0.5)
        fall = 1.0 - _smooth_step((t - end) / _ST_FADE_SECONDS + 1.0)
        slope = 1.0 + downslope * np.clip((t - start) / (end - _ST_FADE_SECONDS - start), 0, 1)
        offset += level_mv * rise * fall * slope
    return offset


def _smooth_step(x: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, a raised cosine in between."""
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(x, 0.0, 1.0))


def _interference(
    morphology: Morphology, n: int, sampling_rate: float, rng: np.random.Generator
) -> np.ndarray:
    """Muscle noise, respiratory baseline wander and mains hum (zero for a clean morphology)."""
    t = np.arange(n) / sampling_rate
    emg = rng.normal(0.0, rng.uniform(*morphology.emg_noise_mv), n)
    wander = rng.uniform(*morphology.wander_mv) * np.sin(
        2 * np.pi * rng.uniform(0.15, 0.4) * t + rng.uniform(0, 2 * np.pi)
    )
    mains = rng.choice([50.0, 60.0])
    hum = rng.uniform(*morphology.hum_mv) * np.sin(
        2 * np.pi * mains * t + rng.uniform(0, 2 * np.pi)
    )
    return emg + wander + hum
