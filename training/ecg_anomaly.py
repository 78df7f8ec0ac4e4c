"""Train, evaluate, store and calibrate the ECG beat anomaly model (dense Keras autoencoder).

As in the source system: the autoencoder learns to reconstruct NORMAL beats only; a beat whose
reconstruction MAE exceeds mean + k * std of the normal training beats' MAE is anomalous.
Serving evaluates the same weights with NumPy (`medserve.ecg.autoencoder.BeatScorer`), and this
module checks the two agree before anything is saved.
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Sequence
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from medserve import model_store
from medserve.drift import build_reference
from medserve.ecg.autoencoder import (
    ACTIVATIONS,
    HIDDEN_UNITS,
    BeatScorer,
    ScorerParams,
    mae_threshold,
)
from medserve.ecg.beats import BEAT_SAMPLES, NORMAL, BeatSet, beat_from_log
from medserve.ecg.ecg5000 import load_ecg5000
from medserve.ecg.model import DRIFT_FEATURES, KERAS_FILE, MODEL_NAME, drift_features
from medserve.ecg.synthetic import SyntheticEcgConfig, load_or_generate
from medserve.prediction_log import LabelledExample
from medserve.settings import get_settings
from training.progress import ProgressCallback, Reporter

CONFIRMED_ANOMALOUS = "confirmed_anomalous"  # label of review-loop beats a clinician flagged
KERAS_EQUALITY_TOLERANCE = 1e-5
UNWATCHED = Reporter(MODEL_NAME)  # reports to nobody


class EcgTrainConfig(BaseSettings):
    """Training parameters (`MEDSERVE_ECG_TRAIN_*`), the source's defaults."""

    model_config = SettingsConfigDict(env_prefix="MEDSERVE_ECG_TRAIN_", extra="ignore")

    seed: int = 21
    test_size: float = Field(default=0.2, gt=0, lt=1)
    optimizer: str = "adam"
    loss: str = "mae"
    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=512, ge=1)
    threshold_k: float = Field(default=1.0, ge=0)
    normal_beats: int = Field(default=4000, ge=10, description="Synthetic normal beats.")
    abnormal_beats_per_class: int = Field(default=600, ge=3)
    data_file: Path | None = Field(
        default=None, description="Train on an ECG5000-format file instead of synthetic beats."
    )
    feedback_since: datetime | None = Field(
        default=None, description="Only confirmed beats predicted at or after this time."
    )
    feedback_until: datetime | None = Field(
        default=None, description="Only confirmed beats predicted before this time."
    )
    version: str | None = Field(
        default=None, description="Model tag version (the run's name); generated when unset."
    )


class EcgTrainResult(BaseModel):
    tag: str
    metrics: dict[str, Any]


def training_beats(config: EcgTrainConfig) -> BeatSet:
    """The labelled beats of a run: an ECG5000-format file, or cached synthetic beats."""
    if config.data_file is not None:
        return load_ecg5000(config.data_file)
    synthetic = SyntheticEcgConfig(
        seed=config.seed,
        normal_beats=config.normal_beats,
        abnormal_beats_per_class=config.abnormal_beats_per_class,
    )
    return load_or_generate(synthetic, get_settings().home / "cache" / "ecg")


def feedback_beats(examples: Sequence[LabelledExample]) -> tuple[BeatSet, list[str]]:
    """Clinician-confirmed beats from the review loop, and their prediction ids."""
    beats = np.array([beat_from_log(e.inputs) for e in examples], dtype=np.float32)
    labels = np.array(
        [CONFIRMED_ANOMALOUS if e.outcome["label"] else NORMAL for e in examples], dtype=object
    ).astype(str)
    records = -1 - np.arange(len(examples), dtype=np.int64)  # never clash with source records
    beat_set = BeatSet(
        beats.reshape(-1, BEAT_SAMPLES), labels, np.full(len(examples), "", dtype=str), records
    )
    return beat_set, [e.prediction_id for e in examples]


def split_by_record(beats: BeatSet, test_size: float, seed: int) -> tuple[BeatSet, BeatSet]:
    """Train/test split of whole records, stratified by class and severity, so that beats cut
    from one recording (near copies of each other) never land on both sides."""
    rng = np.random.default_rng(seed)
    strata = np.char.add(np.char.add(beats.label.astype(str), "/"), beats.severity.astype(str))
    test = np.zeros(len(beats), dtype=bool)
    for stratum in sorted(set(strata.tolist())):
        in_stratum = strata == stratum
        records = np.unique(beats.record[in_stratum])
        rng.shuffle(records)
        n_test = max(1, round(len(records) * test_size))
        test |= np.isin(beats.record, records[:n_test]) & in_stratum
    return beats.subset(~test), beats.subset(test)


def fit_autoencoder(
    normal: np.ndarray,
    validation: np.ndarray,
    config: EcgTrainConfig,
    report: Reporter = UNWATCHED,
) -> Any:
    """Fit the Keras autoencoder on normalised normal beats; deterministic for a seed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    layers = [keras.Input(shape=(BEAT_SAMPLES,))]
    units = [*HIDDEN_UNITS, BEAT_SAMPLES]
    layers += [keras.layers.Dense(n, activation=a) for n, a in zip(units, ACTIVATIONS, strict=True)]
    model = keras.Sequential(layers, name="ecg_autoencoder")
    model.compile(optimizer=config.optimizer, loss=config.loss)
    model.fit(
        normal,
        normal,
        epochs=config.epochs,
        batch_size=config.batch_size,
        validation_data=(validation, validation),
        shuffle=True,
        callbacks=report.keras_callbacks(config.epochs),
        verbose=0,
    )
    return model


def scorer_from_keras(model: Any, params: ScorerParams) -> BeatScorer:
    weights = model.get_weights()
    return BeatScorer(params, list(zip(weights[0::2], weights[1::2], strict=True)))


def evaluate(test: BeatSet, mae: np.ndarray, threshold: float) -> dict[str, Any]:
    """Accuracy, precision, recall, F1, ROC AUC (positive = anomalous), plus how well each
    abnormal class and severity is caught and how many normal beats are flagged."""
    truth = test.is_anomalous
    flagged = mae > threshold
    precision, recall, f1, _ = precision_recall_fscore_support(
        truth, flagged, average="binary", zero_division=0
    )
    metrics: dict[str, Any] = {
        "accuracy": float(np.mean(flagged == truth)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "roc_auc": float(roc_auc_score(truth, mae)) if 0 < truth.sum() < len(truth) else None,
        "false_positive_rate": float(np.mean(flagged[~truth])) if (~truth).any() else None,
        "confusion_matrix": confusion_matrix(truth, flagged, labels=[False, True]).tolist(),
    }
    caught: dict[str, Any] = {}
    for label in sorted(set(test.label[truth].tolist())):
        in_class = test.label == label
        entry = {"beats": int(in_class.sum()), "recall": float(np.mean(flagged[in_class]))}
        for severity in sorted(set(test.severity[in_class].tolist()) - {""}):
            cell = in_class & (test.severity == severity)
            entry[f"recall_{severity}"] = float(np.mean(flagged[cell]))
        caught[label] = entry
    metrics["per_class"] = caught
    return metrics


def train(
    config: EcgTrainConfig,
    feedback: Sequence[LabelledExample] = (),
    progress: ProgressCallback | None = None,
) -> EcgTrainResult:
    """Split by record, fit on normal training beats, threshold, evaluate, store."""
    report = Reporter(MODEL_NAME, progress)
    report("beats (synthetic ones are generated once, then cached)")
    beats = training_beats(config)
    train_set, test_set = split_by_record(beats, config.test_size, config.seed)
    feedback_ids: list[str] = []
    if feedback:
        confirmed, feedback_ids = feedback_beats(feedback)
        train_set = BeatSet.concat([train_set, confirmed])
    params = ScorerParams(
        min=float(train_set.beats.min()),
        max=float(train_set.beats.max()),
        threshold=0.0,
        threshold_k=config.threshold_k,
    )
    normal_train = train_set.subset(~train_set.is_anomalous)
    normal_test = test_set.subset(~test_set.is_anomalous)
    report("epochs", total=config.epochs)
    model = fit_autoencoder(
        params.normalise(normal_train.beats), params.normalise(normal_test.beats), config, report
    )
    report("evaluating and saving", completed=config.epochs, total=config.epochs)
    scorer = scorer_from_keras(model, params)
    gap = _keras_gap(model, scorer, test_set.beats)
    if gap > KERAS_EQUALITY_TOLERANCE:
        raise RuntimeError(f"NumPy forward pass differs from Keras by {gap}")

    _, train_mae = scorer.score(normal_train.beats)
    threshold = mae_threshold(train_mae, config.threshold_k)
    scorer = scorer.with_threshold(threshold, config.threshold_k)
    _, test_mae = scorer.score(test_set.beats)
    metrics = evaluate(test_set, test_mae, threshold)
    metrics |= {
        "threshold": threshold,
        "n_train": len(train_set),
        "n_train_normal": len(normal_train),
        "n_test": len(test_set),
        "n_feedback": len(feedback_ids),
        "keras_numpy_max_gap": gap,
    }
    metadata = _metadata(config, metrics, scorer, train_set)
    card = metadata | {"metrics": metrics, "feedback_prediction_ids": feedback_ids}
    reference = _reference(normal_train.beats, train_mae, threshold)
    tag = MODEL_NAME if config.version is None else f"{MODEL_NAME}:{config.version}"
    with model_store.create_model(tag, metadata, card, reference) as stored:
        model.save(Path(stored.path) / KERAS_FILE)
        scorer.save(Path(stored.path))
    return EcgTrainResult(tag=str(stored.tag), metrics=metrics)


class CalibrationResult(BaseModel):
    tag: str
    calibrated_from: str
    threshold: float
    previous_threshold: float
    beats: int
    flagged_share_before: float = Field(description="Share of the given beats the old flagged.")


def calibrate(tag: str, normal_beats: np.ndarray, k: float | None = None) -> CalibrationResult:
    """A new model version whose threshold is mean + k * std of the MAE of a deployment's own
    normal beats (a threshold fitted on synthetic beats does not transfer to real recordings).

    Weights and normalisation are unchanged; the drift reference is rebuilt from these beats.
    """
    source_tag = model_store.resolve_tag(tag)
    folder = model_store.model_folder(source_tag)
    scorer = BeatScorer.load(folder)
    k = scorer.params.threshold_k if k is None else k
    _, mae = scorer.score(normal_beats)
    threshold = mae_threshold(mae, k)
    calibrated = scorer.with_threshold(threshold, k)
    card = model_store.load_card(source_tag)
    beat_set = BeatSet(
        np.asarray(normal_beats, dtype=np.float32),
        np.full(len(normal_beats), NORMAL),
        np.full(len(normal_beats), ""),
        np.arange(len(normal_beats), dtype=np.int64),
    )
    calibration = {
        "calibrated_from": source_tag,
        "beats": len(normal_beats),
        "beats_sha256": beat_set.sha256(),
        "threshold_k": k,
        "previous_threshold": scorer.params.threshold,
    }
    metadata = dict(card) | {"calibration": calibration}
    metadata["params"] = dict(card.get("params", {})) | {"threshold": threshold}
    metadata.pop("feedback_prediction_ids", None)
    card = dict(card) | {"calibration": calibration}
    name = source_tag.split(":", 1)[0]
    with model_store.create_model(
        name, metadata, card, _reference(normal_beats, mae, threshold)
    ) as stored:
        shutil.copy(folder / KERAS_FILE, Path(stored.path) / KERAS_FILE)
        calibrated.save(Path(stored.path))
    return CalibrationResult(
        tag=str(stored.tag),
        calibrated_from=source_tag,
        threshold=threshold,
        previous_threshold=scorer.params.threshold,
        beats=len(normal_beats),
        flagged_share_before=float(np.mean(mae > scorer.params.threshold)),
    )


def read_beats_file(path: Path) -> np.ndarray:
    """Beats from a text file: 140 values per row, or the ECG5000 layout (label + 140), of
    which only the rows labelled normal are kept. `.npy` files hold an [n, 140] array."""
    if path.suffix == ".npy":
        beats = np.load(path)
    else:
        first = path.read_text().split("\n", 1)[0]
        width = len(first.replace(",", " ").split())
        if width == BEAT_SAMPLES + 1:
            beat_set = load_ecg5000(path)
            return beat_set.beats[~beat_set.is_anomalous]
        beats = np.loadtxt(path, delimiter="," if "," in first else None, ndmin=2)
    if beats.ndim != 2 or beats.shape[1] != BEAT_SAMPLES or not np.isfinite(beats).all():
        raise ValueError(f"{path.name}: expected finite rows of {BEAT_SAMPLES} values")
    return beats.astype(np.float32)


def _reference(beats: np.ndarray, mae: np.ndarray, threshold: float) -> Any:
    """Drift reference of normal traffic: beat summaries and the MAE of normal beats; its
    positive rate is the share of normal beats above the threshold (the expected false alarms)."""
    return build_reference(drift_features(beats), DRIFT_FEATURES, set(), mae, mae > threshold)


def _metadata(
    config: EcgTrainConfig, metrics: dict[str, Any], scorer: BeatScorer, train_set: BeatSet
) -> dict[str, Any]:
    import keras

    return {
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, float | int)},
        # BentoML metadata holds no None: unset options are left out.
        "params": {
            k: v
            for k, v in (config.model_dump(mode="json") | scorer.params.model_dump()).items()
            if v is not None and k != "activations"
        },
        "training_data_sha256": train_set.sha256(),
        "classes": ["normal", "anomalous"],
        "medserve_version": version("medserve"),
        "keras_version": keras.__version__,
        "python_version": platform.python_version(),
    }


def _keras_gap(model: Any, scorer: BeatScorer, beats: np.ndarray) -> float:
    normalised = scorer.params.normalise(beats)
    keras_out = np.asarray(model.predict(normalised, verbose=0))
    return float(np.max(np.abs(keras_out - scorer.reconstruct(normalised))))
