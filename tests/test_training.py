"""Heart training: figures, determinism, the metadata contract, feedback rows."""

from __future__ import annotations

import json

import joblib
import numpy as np
import pytest

from medserve import model_store
from medserve.heart.data import load_kaggle
from medserve.heart.model import PIPELINE_FILE, HeartRiskModel
from medserve.prediction_log import LabelledExample, utcnow
from tests.heart_samples import dataset_patients
from training.heart_risk import HeartTrainConfig, feedback_frame, train


def test_accuracy_at_least_the_published_figure(heart_tag: str) -> None:
    card = model_store.load_card(heart_tag)
    assert card["metrics"]["accuracy"] >= 0.82
    assert card["metrics"]["roc_auc"] >= 0.85
    assert card["metrics"]["n_test"] == 61
    assert set(card["metrics"]["per_class"]) == {
        "no_coronary_artery_disease",
        "coronary_artery_disease",
    }
    assert np.array(card["metrics"]["confusion_matrix"]).sum() == 61


def test_metadata_contract(heart_tag: str) -> None:
    import bentoml

    meta = bentoml.models.get(heart_tag).info.metadata
    for key in ("metrics", "params", "training_data_sha256", "feature_names", "medserve_version"):
        assert key in meta, key
    assert len(meta["training_data_sha256"]) == 64
    reference = model_store.load_reference(heart_tag)
    assert [f.name for f in reference.features] == meta["feature_names"]
    assert 0.3 < reference.positive_rate < 0.6


def test_training_is_deterministic(heart_tag: str) -> None:
    again = train(HeartTrainConfig())
    first, second = model_store.load_card(heart_tag), model_store.load_card(again.tag)
    assert json.dumps(first["metrics"]) == json.dumps(second["metrics"])
    assert first["training_data_sha256"] == second["training_data_sha256"]


def test_compiled_scorer_equals_the_sklearn_pipeline(heart_tag: str) -> None:
    model = HeartRiskModel.load(heart_tag)
    pipeline = joblib.load(model_store.model_folder(heart_tag) / PIPELINE_FILE)
    rows = load_kaggle().drop(columns="cad").to_numpy(np.float64)
    rows[::7, 3] = np.nan  # missing numbers are imputed the same way
    np.testing.assert_allclose(model.predict(rows), pipeline.predict_proba(rows), atol=1e-12)


def test_feedback_rows_join_the_training_part(heart_tag: str) -> None:
    examples = [
        LabelledExample(prediction_id=str(i), created_at=utcnow(), inputs=p, outcome={"label": 1})
        for i, p in enumerate(dataset_patients()[:7])
    ]
    frame = feedback_frame(examples)
    assert frame["cad"].tolist() == [1] * 7
    result = train(HeartTrainConfig(), frame)
    assert result.metrics["n_feedback"] == 7
    assert result.metrics["n_train"] == model_store.load_card(heart_tag)["metrics"]["n_train"] + 7
    assert result.metrics["n_test"] == 61


@pytest.mark.parametrize("seed", [1, 7])
def test_other_seeds_still_reach_the_published_accuracy(seed: int) -> None:
    assert train(HeartTrainConfig(seed=seed)).metrics["accuracy"] >= 0.82
