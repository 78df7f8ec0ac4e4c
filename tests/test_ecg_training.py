"""ECG autoencoder training, the stored model, threshold calibration, and confirmed beats."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from medserve import model_store
from medserve.ecg.autoencoder import BeatScorer, mae_threshold
from medserve.ecg.beats import BEAT_SAMPLES, NORMAL, logged_beat
from medserve.ecg.model import KERAS_FILE
from medserve.ecg.signal import segment_beats
from medserve.ecg.synthetic import ABNORMAL_CLASSES, SEVERITIES, simulate_strip
from medserve.prediction_log import LabelledExample
from tests.conftest import ECG_TEST_TRAINING, run_train_job
from training.ecg_anomaly import (
    EcgTrainConfig,
    read_beats_file,
    split_by_record,
    train,
    training_beats,
)


def _normal_beats(n_strips: int = 3, seed: int = 100) -> np.ndarray:
    strips = [simulate_strip(NORMAL, "", 12, 250, seed=seed + i) for i in range(n_strips)]
    return np.concatenate([segment_beats(s, 250).beats for s in strips]).astype(np.float32)


def test_stored_model_carries_the_registry_metadata(ecg_tag: str) -> None:
    card = model_store.load_card(ecg_tag)
    params = card["params"]
    for key in ("min", "max", "threshold", "threshold_k", "seed", "epochs", "batch_size"):
        assert key in params
    assert params["min"] < 0 < params["max"]
    assert len(card["training_data_sha256"]) == 64
    metrics = card["metrics"]
    for key in ("accuracy", "precision", "recall", "roc_auc", "threshold"):
        assert 0 <= metrics[key] <= 1
    assert metrics["roc_auc"] > 0.85
    assert set(metrics["per_class"]) == set(ABNORMAL_CLASSES)
    severe = [metrics["per_class"][k]["recall_severe"] for k in ABNORMAL_CLASSES]
    assert np.mean(severe) > 0.8
    for entry in metrics["per_class"].values():
        assert {f"recall_{s}" for s in SEVERITIES} <= set(entry)


def test_numpy_scorer_equals_the_keras_model(ecg_tag: str) -> None:
    import keras

    folder = model_store.model_folder(ecg_tag)
    scorer = BeatScorer.load(folder)
    model = keras.models.load_model(folder / KERAS_FILE)
    beats = scorer.params.normalise(_normal_beats(1))
    assert np.max(np.abs(model.predict(beats, verbose=0) - scorer.reconstruct(beats))) < 1e-5


def test_threshold_is_mean_plus_k_std_of_normal_training_mae(ecg_tag: str) -> None:
    config = EcgTrainConfig(**ECG_TEST_TRAINING)
    train_set, test_set = split_by_record(training_beats(config), config.test_size, config.seed)
    assert not set(train_set.record.tolist()) & set(test_set.record.tolist())
    scorer = BeatScorer.load(model_store.model_folder(ecg_tag))
    _, mae = scorer.score(train_set.beats[~train_set.is_anomalous])
    expected = float(np.mean(mae) + config.threshold_k * np.std(mae))
    assert scorer.params.threshold == pytest.approx(expected, rel=1e-5)


def test_training_is_deterministic() -> None:
    config = EcgTrainConfig(**(ECG_TEST_TRAINING | {"epochs": 2}))
    first, second = train(config), train(config)
    assert first.tag != second.tag
    a = BeatScorer.load(model_store.model_folder(first.tag))
    b = BeatScorer.load(model_store.model_folder(second.tag))
    assert a.params == b.params
    for (wa, ba), (wb, bb) in zip(a.layers, b.layers, strict=True):
        assert np.array_equal(wa, wb) and np.array_equal(ba, bb)


def test_confirmed_beats_join_the_training_set(ecg_tag: str) -> None:
    beats = _normal_beats(1, seed=7)
    examples = [
        LabelledExample(
            prediction_id=f"01J{i:023d}",
            created_at=datetime.now(UTC),
            # Both layouts the log has held: JSON numbers (older logs) and base64 float32.
            inputs={"beat": beat.tolist()} if i < 2 else logged_beat(beat),
            outcome={"label": i % 2},
        )
        for i, beat in enumerate(beats[:4])
    ]
    config = EcgTrainConfig(**(ECG_TEST_TRAINING | {"epochs": 2, "version": "with-feedback"}))
    result = train(config, examples)
    assert result.tag == "ecg_anomaly:with-feedback"
    card = model_store.load_card(result.tag)
    assert card["feedback_prediction_ids"] == [e.prediction_id for e in examples]
    assert card["metrics"]["n_feedback"] == 4
    baseline = model_store.load_card(ecg_tag)["metrics"]  # same data, no feedback
    # Two confirmed normal beats train the autoencoder; two anomalous ones do not.
    assert card["metrics"]["n_train_normal"] == baseline["n_train_normal"] + 2


def _write_rows(path: Path, rows: np.ndarray, label: int | None = None) -> None:
    lead = "" if label is None else f"{label} "
    path.write_text("\n".join(lead + " ".join(f"{v:.6f}" for v in row) for row in rows))


def test_calibrate_cli_saves_a_new_tag_with_the_deployment_threshold(
    ecg_tag: str, tmp_path: Path
) -> None:
    beats = _normal_beats(2, seed=300) * 1.3  # a site whose cart records 30 % larger beats
    path = tmp_path / "normal.txt"
    _write_rows(path, beats)
    version = ecg_tag.split(":")[1]
    result = subprocess.run(
        [sys.executable, "-m", "medserve.cli", "calibrate", "ecg_anomaly",
         "--normal-beats", str(path), "--tag", version, "--k", "2"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, COLUMNS="250"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "calibrated" in result.stderr
    newest = model_store.list_models("ecg_anomaly")[0].tag
    assert newest != ecg_tag
    old = BeatScorer.load(model_store.model_folder(ecg_tag))
    new = BeatScorer.load(model_store.model_folder(newest))
    _, mae = old.score(read_beats_file(path))
    assert new.params.threshold == pytest.approx(mae_threshold(mae, 2.0), rel=1e-5)
    assert new.params.threshold_k == 2.0
    assert (new.params.min, new.params.max) == (old.params.min, old.params.max)
    card = model_store.load_card(newest)
    assert card["calibration"]["calibrated_from"] == ecg_tag
    assert card["calibration"]["beats"] == len(beats)
    reference = model_store.load_reference(newest)
    assert reference.n_rows == len(beats)


def test_beats_files_in_three_layouts(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).standard_normal((4, BEAT_SAMPLES)).astype(np.float32)
    plain, ucr, npy = tmp_path / "plain.csv", tmp_path / "ucr.txt", tmp_path / "beats.npy"
    plain.write_text("\n".join(",".join(f"{v:.6f}" for v in row) for row in rows))
    ucr.write_text(
        "\n".join(f"{1 if i < 3 else 3} " + " ".join(f"{v:.6f}" for v in row)
                  for i, row in enumerate(rows))
    )  # fmt: skip
    np.save(npy, rows)
    assert np.allclose(read_beats_file(plain), rows, atol=1e-5)
    assert np.allclose(read_beats_file(ucr), rows[:3], atol=1e-5)  # normal rows only
    assert np.array_equal(read_beats_file(npy), rows)
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n")
    with pytest.raises(ValueError, match="rows of 140 values"):
        read_beats_file(bad)


def test_cli_train_reports_the_tag(tmp_path: Path) -> None:
    env = dict(os.environ, COLUMNS="250")
    env |= {f"MEDSERVE_ECG_TRAIN_{k.upper()}": str(v) for k, v in ECG_TEST_TRAINING.items()}
    env["MEDSERVE_ECG_TRAIN_EPOCHS"] = "2"
    env["MEDSERVE_ECG_TRAIN_VERSION"] = "from-ray"
    _, outcome = run_train_job("ecg_anomaly", env, "--with-feedback")
    assert outcome["tag"] == "ecg_anomaly:from-ray"
    assert outcome["metrics"]["roc_auc"] > 0.5
    assert model_store.has_model("ecg_anomaly:from-ray")


def test_calibrate_cli_names_a_bad_beats_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n")
    result = subprocess.run(
        [sys.executable, "-m", "medserve.cli", "calibrate", "ecg_anomaly", "--normal-beats",
         str(bad)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, COLUMNS="250"),
    )  # fmt: skip
    assert result.returncode == 2
    assert "rows of 140 values" in result.stderr and "Traceback" not in result.stderr
