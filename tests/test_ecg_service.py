"""The ECG service over HTTP: beats, strips, the results store, metrics, errors, logs."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc

from medserve import model_store
from medserve.ecg.autoencoder import BeatScorer
from medserve.ecg.beats import BEAT_SAMPLES, LOGGED_BEAT_KEY, NORMAL, BeatSet, beat_from_log
from medserve.ecg.synthetic import SyntheticEcgConfig, generate, simulate_strip
from medserve.prediction_log import PredictionLog
from medserve.settings import Settings
from tests.servers import ServiceProcess, metric_value, wait_for_metric


@pytest.fixture(scope="module")
def unseen() -> BeatSet:
    """Beats from recordings the model never saw (another seed)."""
    return generate(SyntheticEcgConfig(seed=99, normal_beats=40, abnormal_beats_per_class=15), 1)


def _beats(beat_set: BeatSet, label: str, severity: str = "", n: int = 10) -> list[list[float]]:
    chosen = (beat_set.label == label) & (beat_set.severity == severity)
    return beat_set.beats[chosen][:n].astype(float).round(5).tolist()


def predict(service: ServiceProcess, beats: Any) -> httpx.Response:
    return httpx.post(
        f"{service.url}/predict", json={"beats": beats}, headers=service.auth_headers, timeout=30
    )


def strip(service: ServiceProcess, values: Any, rate: Any = 250, **extra: Any) -> httpx.Response:
    body = {"values": values, "sampling_rate_hz": rate} | extra
    return httpx.post(f"{service.url}/strip", json=body, headers=service.auth_headers, timeout=30)


def test_scores_beats_like_the_stored_model(
    ecg_service: ServiceProcess, ecg_tag: str, unseen: BeatSet
) -> None:
    normal, pvc = _beats(unseen, NORMAL), _beats(unseen, "pvc_wide_qrs", "severe", 5)
    response = predict(ecg_service, normal + pvc)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_tag"] == ecg_tag
    scorer = BeatScorer.load(model_store.model_folder(ecg_tag))
    reconstruction, mae = scorer.score(np.array(normal + pvc))
    for answer, expected_mae, expected in zip(
        body["predictions"], mae, reconstruction, strict=True
    ):
        assert answer["mae"] == pytest.approx(float(expected_mae), abs=1e-6)
        assert answer["threshold"] == pytest.approx(scorer.params.threshold)
        assert answer["anomalous"] == (expected_mae > scorer.params.threshold)
        assert answer["model_tag"] == ecg_tag
        assert np.allclose(answer["reconstruction"], expected, atol=1e-4)
    # The service's verdicts are the model's (above); that the model separates the classes is
    # measured in training (model card). Here only what holds on any CPU: severe PVC-like beats
    # reconstruct worse than typical normal beats and are all flagged.
    errors = [p["mae"] for p in body["predictions"]]
    assert min(errors[10:]) > float(np.median(errors[:10]))
    assert all(p["anomalous"] for p in body["predictions"][10:])


def _error(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


@pytest.mark.parametrize(
    ("beats", "status", "field"),
    [
        ([[0.1] * 139], 422, "beats.0"),
        ([[0.1] * 141], 422, "beats.0"),
        ([[0.1] * 139 + ["x"]], 422, "beats.0.139"),
        ([[0.1] * 139 + [True]], 422, "beats.0.139"),
        ([[0.1] * 139 + [5000.0]], 422, "beats.0.139"),
        ([[0.1] * 139 + [None]], 422, "beats.0.139"),
        ([], 422, "beats"),
        ([[0.1] * 140] * 201, 413, "beats"),
        ("not a list", 422, "beats"),
    ],
)
def test_bad_beats_get_a_clear_4xx(
    ecg_service: ServiceProcess, beats: Any, status: int, field: str
) -> None:
    response = predict(ecg_service, beats)
    assert response.status_code == status, response.text
    assert _error(response)["field"] == field


def test_nan_and_malformed_json_are_400(ecg_service: ServiceProcess) -> None:
    nan_body = '{"beats": [[' + ", ".join(["NaN"] * BEAT_SAMPLES) + "]]}"
    for body in (nan_body, '{"beats": [[0.1, 0.2'):
        response = httpx.post(
            f"{ecg_service.url}/predict",
            content=body,
            headers=ecg_service.auth_headers | {"content-type": "application/json"},
        )
        assert response.status_code in (400, 422), response.text
        assert "error" in _error(response)


def test_strip_is_segmented_scored_and_summarised(ecg_service: ServiceProcess) -> None:
    values = simulate_strip(NORMAL, "", 10, 250, seed=5)
    response = strip(ecg_service, values.round(5).tolist())
    assert response.status_code == 200, response.text
    body = response.json()
    summary = body["summary"]
    assert summary["duration_seconds"] == pytest.approx(10)
    expected_beats = summary["heart_rate_bpm"] * 10 / 60
    assert abs(summary["beat_count"] - expected_beats) <= 3  # first/last beats have no window
    assert 50 < summary["heart_rate_bpm"] < 115
    assert summary["anomalous_share"] <= 0.4
    assert len(body["beats"]) == summary["beat_count"]
    peaks = [b["r_peak_seconds"] for b in body["beats"]]
    assert peaks == sorted(peaks) and 0 < peaks[0] < peaks[-1] < 10
    assert "reconstruction" not in body["beats"][0]
    pvc = simulate_strip("pvc_wide_qrs", "severe", 8, 500, seed=6)
    flagged = strip(ecg_service, pvc.round(5).tolist(), 500, include_reconstructions=True)
    assert flagged.status_code == 200, flagged.text
    assert flagged.json()["summary"]["anomalous_share"] >= 0.8
    assert len(flagged.json()["beats"][0]["reconstruction"]) == BEAT_SAMPLES


@pytest.mark.parametrize(
    ("values", "rate", "status", "error"),
    [
        ([0.2] * 2500, 250, 422, "flat_signal"),
        ([0.1] * 500, 250, 422, "too_short"),
        (np.random.default_rng(2).standard_normal(2500).round(4).tolist(), 250, 422, "no_beats"),
        ([0.1] * 2500, 50, 422, "validation_error"),
        ([0.1] * 2499 + ["NaN"], 250, 422, "validation_error"),
        ([0.1] * 2499 + [1e6], 250, 422, "validation_error"),
    ],
)
def test_bad_strips_get_a_clear_4xx(
    ecg_service: ServiceProcess, values: list, rate: int, status: int, error: str
) -> None:
    response = strip(ecg_service, values, rate)
    assert response.status_code == status, response.text
    body = _error(response)
    assert body["error"] == error
    assert body["detail"]


def test_scored_beats_are_stored_compactly_and_listed(
    ecg_service: ServiceProcess, unseen: BeatSet
) -> None:
    beats = _beats(unseen, NORMAL, n=2) + _beats(unseen, "inverted_t", "severe", 2)
    answers = predict(ecg_service, beats).json()["predictions"]
    auth = ecg_service.auth_headers
    stored = httpx.get(
        f"{ecg_service.url}/predictions/{answers[2]['prediction_id']}", headers=auth
    ).json()
    assert set(stored["inputs"]) == {LOGGED_BEAT_KEY}  # float32 samples as base64, not JSON
    assert np.array_equal(beat_from_log(stored["inputs"]), np.float32(beats[2]))
    assert "reconstruction" not in stored["outputs"]  # recomputable from the beat and the tag
    assert stored["outputs"]["anomalous"] is True and stored["predicted_class"] == 1
    assert stored["model_tag"] == answers[2]["model_tag"]
    flagged = httpx.get(
        f"{ecg_service.url}/predictions", params={"predicted_class": 1}, headers=auth
    ).json()
    assert flagged and all(r["predicted_class"] == 1 for r in flagged)
    assert answers[2]["prediction_id"] in {r["id"] for r in flagged}
    bad = httpx.get(f"{ecg_service.url}/predictions", params={"since": "yesterday"}, headers=auth)
    assert bad.status_code == 422 and _error(bad)["field"] == "since"


def test_metrics_show_error_distribution_anomaly_rate_and_beats_per_request(
    ecg_service: ServiceProcess, unseen: BeatSet
) -> None:
    for _ in range(6):  # past the drift window's minimum of 50 beats
        assert predict(ecg_service, _beats(unseen, NORMAL, n=10)).status_code == 200
    model = 'model="ecg_anomaly"'
    # The PSI gauges are exported by a throttled timer after the batch: wait for it.
    text = wait_for_metric(ecg_service, f"medserve_prediction_psi{{{model}}}")
    assert metric_value(text, f"medserve_prediction_score_count{{{model}}}") >= 60
    assert metric_value(text, f'medserve_prediction_score_bucket{{le="0.05",{model}}}') > 0
    assert 0 <= metric_value(text, f"medserve_positive_rate{{{model}}}") <= 1
    assert metric_value(text, f"medserve_prediction_psi{{{model}}}") >= 0
    assert metric_value(text, f'medserve_feature_psi{{feature="peak_to_peak",{model}}}') >= 0
    beats_per_request = 'medserve_instances_per_request_sum{api="http_json",model="ecg_anomaly"}'
    assert metric_value(text, beats_per_request) >= 60


def test_v2_grpc_infer_matches_the_json_api(ecg_service: ServiceProcess, unseen: BeatSet) -> None:
    beats = np.array(_beats(unseen, NORMAL, n=2) + _beats(unseen, "st_depression", "severe", 2))
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{ecg_service.grpc_port}")
    tensor = tgrpc.InferInput("beats", list(beats.shape), "FP32")
    tensor.set_data_from_numpy(beats.astype(np.float32))
    result = client.infer("ecg_anomaly", [tensor], headers=ecg_service.auth_headers)
    answers = predict(ecg_service, beats.tolist()).json()["predictions"]
    assert result.as_numpy("anomalous").tolist() == [a["anomalous"] for a in answers]
    assert np.allclose(result.as_numpy("mae"), [a["mae"] for a in answers], atol=1e-5)
    assert result.as_numpy("reconstruction").shape == (4, BEAT_SAMPLES)


def test_no_beat_values_in_logs(ecg_service: ServiceProcess) -> None:
    secret = [0.123457 + i * 1e-6 for i in range(BEAT_SAMPLES)]  # values with a fingerprint
    assert predict(ecg_service, [secret]).status_code == 200
    assert predict(ecg_service, [[*secret[:-1], 7777.5]]).status_code == 422
    assert strip(ecg_service, [0.123457] * 2500).status_code == 422
    httpx.post(
        f"{ecg_service.url}/predict",
        content=json.dumps({"beats": [secret]})[:-7],
        headers=ecg_service.auth_headers | {"content-type": "application/json"},
    )
    log = ecg_service.log_text()
    assert "request rejected" in log
    assert not re.search(r"0\.12345[78]|7777\.5", log)


def test_strip_at_the_amplitude_bound_never_fails_with_500(ecg_service: ServiceProcess) -> None:
    # A legal strip whose QRS complexes touch +-100 mV: filtering can overshoot the beat bound.
    values = np.clip(simulate_strip(NORMAL, "", 8, 250, seed=9) * 90, -100, 100)
    response = strip(ecg_service, values.round(4).tolist())
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert all(beat["anomalous"] for beat in response.json()["beats"])


def test_review_confirmation_must_be_the_form(ecg_service: ServiceProcess, unseen: BeatSet) -> None:
    (answer,) = predict(ecg_service, _beats(unseen, NORMAL, n=1)).json()["predictions"]
    url = f"{ecg_service.url}/review/{answer['prediction_id']}"
    # A bearer token is not ambient: posting the form with it needs no CSRF field.
    auth = ecg_service.auth_headers
    as_json = httpx.post(url, json={"anomalous": "on"}, headers=auth)
    assert as_json.status_code == 415 and _error(as_json)["error"] == "unsupported_media_type"
    huge = httpx.post(url, data={"anomalous": "on", "reviewer": "x" * 2_000_000}, headers=auth)
    assert huge.status_code == 413
    log = PredictionLog(Settings(home=ecg_service.log_path.parent).resolved_database_url)
    assert log.feedback_of(answer["prediction_id"]) is None  # neither call recorded a label
    form = httpx.post(url, data={"anomalous": "on"}, headers=auth, follow_redirects=False)
    assert form.status_code == 303
    assert log.feedback_of(answer["prediction_id"]) == {"label": 1}
