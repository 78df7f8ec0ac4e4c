"""Train, evaluate and store the heart-attack risk model (coronary artery disease)."""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import sklearn
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split

from medserve import model_store
from medserve.drift import build_reference
from medserve.heart.codes import CLASS_DESCRIPTION, CLASS_LABELS, FEATURE_NAMES, FEATURES
from medserve.heart.data import KAGGLE_CSV, TARGET, file_sha256, load_kaggle
from medserve.heart.features import CATEGORICAL_NAMES, to_matrix
from medserve.heart.model import MODEL_NAME, PIPELINE_FILE, SCORER_FILE
from medserve.heart.pipeline import build_pipeline, compile_pipeline
from medserve.prediction_log import LabelledExample
from training.progress import ProgressCallback, Reporter


class HeartTrainConfig(BaseSettings):
    """Training parameters (`MEDSERVE_HEART_TRAIN_*`); the defaults reproduce the README figures."""

    model_config = SettingsConfigDict(env_prefix="MEDSERVE_HEART_TRAIN_", extra="ignore")

    seed: int = 42
    test_size: float = Field(default=0.2, gt=0, lt=1)
    cv_folds: int = Field(default=5, ge=2)
    c_grid: list[float] = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]


class HeartTrainResult(BaseModel):
    """What a training run produced."""

    tag: str
    metrics: dict[str, Any]


def evaluate(y_true: np.ndarray, proba: np.ndarray) -> dict:
    """Accuracy, ROC AUC, per-class precision/recall/F1, Brier score and confusion matrix."""
    predicted = (proba >= 0.5).astype(int)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, predicted, labels=[0, 1], zero_division=0
    )
    per_class = {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(CLASS_LABELS)
    }
    return {
        "accuracy": float(accuracy_score(y_true, predicted)),
        "roc_auc": float(roc_auc_score(y_true, proba)),
        "brier": float(brier_score_loss(y_true, proba)),
        "confusion_matrix": confusion_matrix(y_true, predicted, labels=[0, 1]).tolist(),
        "per_class": per_class,
    }


def feedback_frame(examples: Sequence[LabelledExample]) -> pd.DataFrame:
    """Confirmed predictions from the log -> canonical rows (features + `cad`)."""
    frame = pd.DataFrame(to_matrix(e.inputs for e in examples), columns=list(FEATURE_NAMES))
    frame[TARGET] = [int(e.outcome["label"]) for e in examples]
    return frame


def frame_sha256(frame: pd.DataFrame) -> str:
    """Content hash of a canonical training frame (order and values)."""
    return hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()


def train(
    config: HeartTrainConfig,
    feedback: pd.DataFrame | None = None,
    progress: ProgressCallback | None = None,
) -> HeartTrainResult:
    """Split, select C by stratified CV, fit, evaluate on the held-out 20 %, save to the store.

    Confirmed feedback rows (canonical features + `cad`) join the training part only, so that the
    test split stays comparable between runs.
    """
    report = Reporter(MODEL_NAME, progress)
    report("cross-validation", total=1)
    data = load_kaggle()
    train_df, test_df = train_test_split(
        data, test_size=config.test_size, stratify=data[TARGET], random_state=config.seed
    )
    n_feedback = 0 if feedback is None else len(feedback)
    if n_feedback:
        train_df = pd.concat([train_df, feedback[[*FEATURE_NAMES, TARGET]]], ignore_index=True)
    x_train = train_df[list(FEATURE_NAMES)].to_numpy(np.float64)
    y_train = train_df[TARGET].to_numpy(int)
    x_test = test_df[list(FEATURE_NAMES)].to_numpy(np.float64)
    y_test = test_df[TARGET].to_numpy(int)

    folds = StratifiedKFold(n_splits=config.cv_folds, shuffle=True, random_state=config.seed)
    search = GridSearchCV(
        build_pipeline(c=1.0, seed=config.seed),
        {"classifier__C": config.c_grid},
        cv=folds,
        scoring="accuracy",
    )
    search.fit(x_train, y_train)
    report("evaluating and saving", completed=1, total=1)
    pipeline = search.best_estimator_
    best = search.best_index_
    metrics = evaluate(y_test, pipeline.predict_proba(x_test)[:, 1])
    metrics |= {
        "cv_accuracy_mean": float(search.cv_results_["mean_test_score"][best]),
        "cv_accuracy_std": float(search.cv_results_["std_test_score"][best]),
        "n_train": len(train_df),
        "n_test": len(test_df),
        "n_feedback": n_feedback,
    }

    train_scores = pipeline.predict_proba(x_train)[:, 1]
    reference = build_reference(x_train, FEATURE_NAMES, CATEGORICAL_NAMES, train_scores, y_train)
    params = {"C": float(search.best_params_["classifier__C"])} | config.model_dump()
    metadata = {
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, float | int)},
        "params": params,
        "training_data_sha256": frame_sha256(train_df),
        "source_file_sha256": file_sha256(KAGGLE_CSV),
        "feature_names": list(FEATURE_NAMES),
        "classes": list(CLASS_LABELS),
        "medserve_version": version("medserve"),
        "sklearn_version": sklearn.__version__,
        "python_version": platform.python_version(),
    }
    card = metadata | {
        "metrics": metrics,
        "target": CLASS_DESCRIPTION,
        "features": [
            {"name": f.name, "kind": f.kind, "allowed": f.allowed_text(), "meaning": f.description}
            for f in FEATURES
        ],
    }
    scorer = compile_pipeline(pipeline)
    max_gap = float(np.max(np.abs(scorer.predict_proba(x_test) - pipeline.predict_proba(x_test))))
    if max_gap > 1e-9:
        raise RuntimeError(f"compiled scorer differs from the pipeline by {max_gap}")
    with model_store.create_model(MODEL_NAME, metadata, card, reference) as model:
        joblib.dump(pipeline, Path(model.path) / PIPELINE_FILE)
        (Path(model.path) / SCORER_FILE).write_text(scorer.model_dump_json())
    return HeartTrainResult(tag=str(model.tag), metrics=metrics)
