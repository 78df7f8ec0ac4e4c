"""ECG beats: the synthetic generator, the NumPy R-peak detector and segmenter, ECG5000 files."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import neurokit2 as nk
import numpy as np
import pytest

from medserve.ecg.beats import BEAT_SAMPLES, NORMAL
from medserve.ecg.ecg5000 import load_ecg5000
from medserve.ecg.signal import (
    R_PEAK_SAMPLE,
    StripError,
    check_strip,
    detect_r_peaks,
    segment_beats,
)
from medserve.ecg.synthetic import (
    ABNORMAL_CLASSES,
    SEVERITIES,
    SyntheticEcgConfig,
    generate,
    load_or_generate,
    simulate_strip,
)

SMALL = SyntheticEcgConfig(normal_beats=150, abnormal_beats_per_class=30)


@pytest.fixture(scope="module")
def beats():
    return generate(SMALL, workers=1)


def test_generation_is_deterministic_with_exact_counts(beats) -> None:
    again = generate(SMALL, workers=2)  # the worker count does not change the result
    assert np.array_equal(beats.beats, again.beats)
    assert np.array_equal(beats.label, again.label)
    tiny = SyntheticEcgConfig(normal_beats=20, abnormal_beats_per_class=0)
    other = generate(tiny.model_copy(update={"seed": 22}), workers=1)
    assert np.array_equal(generate(tiny, workers=1).beats, beats.beats[:20])  # same normal strips
    assert not np.array_equal(beats.beats[:20], other.beats)
    assert beats.beats.shape == (150 + 30 * len(ABNORMAL_CLASSES), BEAT_SAMPLES)
    assert np.isfinite(beats.beats).all()
    assert int((beats.label == NORMAL).sum()) == 150
    for kind in ABNORMAL_CLASSES:
        in_class = beats.label == kind
        assert int(in_class.sum()) == 30
        assert set(beats.severity[in_class].tolist()) == set(SEVERITIES)
    for record in np.unique(beats.record):  # one class and severity per recording
        in_record = beats.record == record
        assert len({*zip(beats.label[in_record], beats.severity[in_record], strict=True)}) == 1


def _mean(beats, kind: str, severity: str | None, window: slice) -> float:
    chosen = beats.label == kind
    if severity is not None:
        chosen &= beats.severity == severity
    return float(beats.beats[chosen][:, window].mean())


def test_abnormal_classes_differ_from_normal_in_the_clinical_direction(beats) -> None:
    normal = beats.beats[beats.label == NORMAL]
    # RR-normalised beats: R at 42, the ST segment ~50-70, the T wave peaks ~85.
    t_wave = slice(R_PEAK_SAMPLE + 28, R_PEAK_SAMPLE + 58)
    st_segment = slice(R_PEAK_SAMPLE + 8, R_PEAK_SAMPLE + 28)
    assert _mean(beats, "inverted_t", "severe", t_wave) < normal[:, t_wave].mean() - 0.3
    assert _mean(beats, "st_elevation", "severe", st_segment) > (
        normal[:, st_segment].mean() + 0.15
    )
    assert _mean(beats, "st_depression", "severe", st_segment) < (
        normal[:, st_segment].mean() - 0.15
    )
    # Severity orders the size of the change.
    assert _mean(beats, "st_elevation", "mild", st_segment) < _mean(
        beats, "st_elevation", "severe", st_segment
    )
    low = beats.beats[beats.label == "low_amplitude_noisy"]
    assert np.ptp(low, axis=1).mean() < 0.75 * np.ptp(normal, axis=1).mean()

    def qrs_width(rows: np.ndarray) -> float:
        """Samples around R where the beat stays above half of the R amplitude."""
        return float(
            np.mean(
                (
                    rows[:, R_PEAK_SAMPLE - 15 : R_PEAK_SAMPLE + 15]
                    > 0.5 * rows[:, [R_PEAK_SAMPLE]]
                ).sum(axis=1)
            )
        )

    pvc = beats.beats[(beats.label == "pvc_wide_qrs") & (beats.severity == "severe")]
    assert qrs_width(pvc) > 1.3 * qrs_width(normal)


@pytest.mark.parametrize("rate", [100, 250, 500, 1000])
def test_r_peaks_match_neurokit(rate: int) -> None:
    strip = simulate_strip(NORMAL, "", 12, rate, seed=rate)
    ours = detect_r_peaks(strip, rate)
    _, info = nk.ecg_peaks(nk.ecg_clean(strip, sampling_rate=rate), sampling_rate=rate)
    theirs = np.asarray(info["ECG_R_Peaks"])
    assert abs(len(ours) - len(theirs)) <= 1
    tolerance = 0.02 * rate  # 20 ms
    nearest = np.abs(ours[:, None] - theirs[None, :]).min(axis=1)
    assert np.mean(nearest <= tolerance) >= 0.9


def test_segmented_beats_put_r_at_the_same_sample_and_give_the_heart_rate() -> None:
    strip = simulate_strip(NORMAL, "", 12, 360, seed=3)
    segmented = segment_beats(strip, 360)
    assert segmented.beats.shape[1] == BEAT_SAMPLES
    assert np.all(np.abs(segmented.beats.argmax(axis=1) - R_PEAK_SAMPLE) <= 2)
    rr_bpm = 60 / np.median(np.diff(detect_r_peaks(strip, 360)) / 360)
    assert abs(segmented.heart_rate_bpm - rr_bpm) < 1
    assert 50 < segmented.heart_rate_bpm < 115  # the generator's normal range


def test_heart_rate_matches_the_simulated_rate() -> None:
    strip = nk.ecg_simulate(
        duration=20, sampling_rate=250, heart_rate=72, heart_rate_std=1, random_state=4
    )
    assert abs(segment_beats(strip, 250).heart_rate_bpm - 72) < 5


def test_cutting_a_strip_mid_qrs_leaves_the_other_beats_alone() -> None:
    strip = simulate_strip(NORMAL, "", 12, 250, seed=5)
    whole = segment_beats(strip, 250)
    cut = segment_beats(strip[: whole.r_peaks[-1] + 1], 250)  # ends on an R peak
    shared = np.isin(whole.r_peaks, cut.r_peaks[:-1])
    assert shared.sum() >= 5
    kept = np.isin(cut.r_peaks, whole.r_peaks[shared])
    assert np.abs(whole.beats[shared] - cut.beats[kept]).max() < 0.02  # mV


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: np.full(2500, np.nan), "not_finite"),
        (lambda: np.zeros(250 * 2), "too_short"),
        (lambda: np.zeros(250 * 121), "too_long"),
        (lambda: np.full(2500, 0.3), "flat_signal"),
        (lambda: 0.001 * np.random.default_rng(0).standard_normal(2500), "flat_signal"),
    ],
)
def test_check_strip_refuses_bad_strips(make, code: str) -> None:
    with pytest.raises(StripError) as raised:
        check_strip(make(), 250, 3, 120)
    assert raised.value.code == code


def test_noise_has_no_beats() -> None:
    noise = np.random.default_rng(1).standard_normal(2500)
    check_strip(noise, 250, 3, 120)  # not flat, not short: the segmenter must say no
    with pytest.raises(StripError) as raised:
        segment_beats(noise, 250)
    assert raised.value.code == "no_beats"


def test_cache_returns_the_same_beats(tmp_path: Path) -> None:
    config = SyntheticEcgConfig(normal_beats=20, abnormal_beats_per_class=3)
    first = load_or_generate(config, tmp_path, workers=1)
    (cached,) = tmp_path.glob("*.npz")
    cached_at = cached.stat().st_mtime_ns
    second = load_or_generate(config, tmp_path, workers=1)
    assert cached.stat().st_mtime_ns == cached_at  # read, not regenerated
    assert np.array_equal(first.beats, second.beats)
    assert first.sha256() == second.sha256()


def _ecg5000_line(label: int, values: np.ndarray) -> str:
    return "  ".join(f"{v:.7e}" for v in [float(label), *values])


def test_ecg5000_loader_reads_the_ucr_format(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((5, BEAT_SAMPLES))
    path = tmp_path / "ECG5000_TRAIN.txt"
    path.write_text(
        "\n".join(
            _ecg5000_line(label, row) for label, row in zip([1, 2, 3, 4, 5], rows, strict=True)
        )
        + "\n"
    )
    beats = load_ecg5000(path)
    assert np.allclose(beats.beats, rows, atol=1e-6)
    assert beats.record.tolist() == [0, 1, 2, 3, 4]
    comma = tmp_path / "comma.csv"
    comma.write_text(",".join(["3"] + [f"{v:.6f}" for v in rows[0]]) + "\n")
    assert load_ecg5000(comma).label.tolist() == ["pvc"]
    assert beats.label.tolist() == [
        NORMAL,
        "r_on_t_pvc",
        "pvc",
        "supraventricular_or_ectopic",
        "unclassified",
    ]
    assert beats.is_anomalous.tolist() == [False, True, True, True, True]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1 " + " ".join(["0.5"] * 139), "line 2: expected 1 label + 140 values"),
        ("1 " + " ".join(["0.5"] * 139) + " oops", "line 2: non-numeric field"),
        ("7 " + " ".join(["0.5"] * 140), "line 2: label must be one of"),
    ],
)
def test_ecg5000_loader_names_the_bad_line(tmp_path: Path, line: str, message: str) -> None:
    good = _ecg5000_line(1, np.zeros(BEAT_SAMPLES))
    path = tmp_path / "bad.txt"
    path.write_text(f"{good}\n{line}\n")
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        load_ecg5000(path)
    assert "0.5" not in str(raised.value)


def test_signal_module_needs_only_numpy() -> None:
    code = (
        "import sys, medserve.ecg.signal, medserve.ecg.model;"
        "bad = {'scipy', 'neurokit2', 'pandas', 'sklearn', 'tensorflow', 'keras'} & "
        "{m.split('.')[0] for m in sys.modules}; print(sorted(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
