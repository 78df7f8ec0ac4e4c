"""The heart service over real HTTP: answers, bad input, prediction log, feedback, batching."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import select
import socket

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from medserve.heart.codes import CLASS_LABELS, FEATURE_NAMES
from medserve.heart.data import load_kaggle
from medserve.prediction_log import PredictionLog
from medserve.settings import Settings
from tests.heart_samples import VALID_PATIENT, dataset_patients
from tests.servers import ServiceProcess, metric_value, worker_peak_rss_mb
from training.heart_risk import feedback_frame
from training.registry import TRAINERS

# Distinctive values that must never appear in a log line.
SECRET_VALUES = {"chol": 517.3, "trtbps": 187.7, "oldpeak": 7.37}


def post(
    service: ServiceProcess, path: str, headers: dict[str, str] | None = None, **kwargs: object
) -> httpx.Response:
    """A call with the test client's token (and any other `headers`)."""
    headers = service.auth_headers | (headers or {})
    return httpx.post(f"{service.url}{path}", headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]


def get(service: ServiceProcess, path: str) -> httpx.Response:
    return httpx.get(f"{service.url}{path}", headers=service.auth_headers, timeout=30)


def predict(service: ServiceProcess, patients: list[dict]) -> httpx.Response:
    return post(service, "/predict", json={"patients": patients})


def test_predicts_one_patient_with_tag_and_id(
    heart_service: ServiceProcess, heart_tag: str
) -> None:
    response = predict(heart_service, [VALID_PATIENT])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_tag"] == heart_tag
    (prediction,) = body["predictions"]
    assert prediction["class"] in (0, 1)
    assert prediction["label"] == CLASS_LABELS[prediction["class"]]
    assert set(prediction["probabilities"]) == set(CLASS_LABELS)
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0)
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", prediction["prediction_id"])
    assert response.headers["x-request-id"] == body["request_id"]


def test_many_patients_match_the_labels_like_training(heart_service: ServiceProcess) -> None:
    patients = dataset_patients()[::3][:100]  # the file is sorted by target: take a spread
    response = predict(heart_service, patients)
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert len(predictions) == 100
    assert len({p["prediction_id"] for p in predictions}) == 100
    # The service predicts disease with the right sign: P(CAD) is higher for diseased patients.
    cad = load_kaggle()["cad"].to_numpy()[::3][:100]
    p_cad = [p["probabilities"]["coronary_artery_disease"] for p in predictions]
    mean_sick = sum(p for p, y in zip(p_cad, cad, strict=True) if y) / cad.sum()
    mean_well = sum(p for p, y in zip(p_cad, cad, strict=True) if not y) / (100 - cad.sum())
    assert mean_sick > mean_well + 0.3


def test_missing_codes_are_accepted_as_missing(heart_service: ServiceProcess) -> None:
    legacy = VALID_PATIENT | {"caa": 4, "thall": 0}
    explicit = VALID_PATIENT | {"caa": None, "thall": None}
    a, b = predict(heart_service, [legacy, explicit]).json()["predictions"]
    assert a["probabilities"] == pytest.approx(b["probabilities"])


BAD_REQUESTS = [
    # (name, raw body or json, expected status, expected error code)
    ("malformed json", b'{"patients": [', 400, "malformed_json"),
    ("not json at all", b"age=63", 400, "malformed_json"),
    ("empty body", b"", 400, "malformed_json"),
    ("top-level list", [VALID_PATIENT], 422, "validation_error"),
    ("missing patients key", {"patient": VALID_PATIENT}, 422, "validation_error"),
    ("empty batch", {"patients": []}, 422, "validation_error"),
    ("oversized batch", {"patients": [VALID_PATIENT] * 101}, 413, "batch_too_large"),
    (
        "missing field",
        {"patients": [{k: v for k, v in VALID_PATIENT.items() if k != "age"}]},
        422,
        "validation_error",
    ),
    ("extra field", {"patients": [VALID_PATIENT | {"name": "x"}]}, 422, "validation_error"),
    ("string for number", {"patients": [VALID_PATIENT | {"age": "63"}]}, 422, "validation_error"),
    ("bool for code", {"patients": [VALID_PATIENT | {"sex": True}]}, 422, "validation_error"),
    ("float for code", {"patients": [VALID_PATIENT | {"cp": 1.5}]}, 422, "validation_error"),
    ("null for required", {"patients": [VALID_PATIENT | {"chol": None}]}, 422, "validation_error"),
    (
        "NaN",
        b'{"patients": ['
        + json.dumps(VALID_PATIENT | {"oldpeak": 1})
        .encode()
        .replace(b'"oldpeak": 1', b'"oldpeak": NaN')
        + b"]}",
        422,
        "validation_error",
    ),
    (
        "Infinity",
        b'{"patients": ['
        + json.dumps(VALID_PATIENT | {"chol": 1})
        .encode()
        .replace(b'"chol": 1', b'"chol": Infinity')
        + b"]}",
        422,
        "validation_error",
    ),
    ("age too high", {"patients": [VALID_PATIENT | {"age": 121}]}, 422, "validation_error"),
    ("age zero", {"patients": [VALID_PATIENT | {"age": 0}]}, 422, "validation_error"),
    ("bp too low", {"patients": [VALID_PATIENT | {"trtbps": 49.9}]}, 422, "validation_error"),
    ("chol too high", {"patients": [VALID_PATIENT | {"chol": 701}]}, 422, "validation_error"),
    ("hr too low", {"patients": [VALID_PATIENT | {"thalachh": 39}]}, 422, "validation_error"),
    (
        "negative oldpeak",
        {"patients": [VALID_PATIENT | {"oldpeak": -0.1}]},
        422,
        "validation_error",
    ),
    ("unknown cp code", {"patients": [VALID_PATIENT | {"cp": 4}]}, 422, "validation_error"),
    ("unknown thall code", {"patients": [VALID_PATIENT | {"thall": 5}]}, 422, "validation_error"),
    ("caa out of range", {"patients": [VALID_PATIENT | {"caa": 5}]}, 422, "validation_error"),
    ("body too large", {"patients": [VALID_PATIENT], "pad": "x" * 70_000}, 413, "body_too_large"),
]


@pytest.mark.parametrize(
    ("name", "body", "status", "error"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_input_gets_a_clear_4xx(
    heart_service: ServiceProcess, name: str, body: object, status: int, error: str
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = post(
        heart_service, "/predict", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["error"] == error
    assert payload["detail"]
    assert payload["request_id"] == response.headers["x-request-id"]


def test_range_violation_names_field_value_and_range(heart_service: ServiceProcess) -> None:
    response = predict(heart_service, [VALID_PATIENT, VALID_PATIENT | {"chol": 999}])
    assert response.status_code == 422
    body = response.json()
    assert body["field"] == "patients.1.chol"
    (err,) = body["errors"]
    assert err["value"] == 999
    assert "80-700 mg/dl" in err["message"]


def test_bad_code_lists_the_allowed_codes(heart_service: ServiceProcess) -> None:
    body = predict(heart_service, [VALID_PATIENT | {"restecg": 3}]).json()
    assert body["field"] == "patients.0.restecg"
    assert "left-ventricular hypertrophy" in body["errors"][0]["message"]


def test_wrong_media_type_is_415(heart_service: ServiceProcess) -> None:
    response = post(
        heart_service, "/predict", content=b"<x/>", headers={"content-type": "application/xml"}
    )
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


def test_unknown_route_and_wrong_method_use_the_error_shape(heart_service: ServiceProcess) -> None:
    # Without a token: the catch-all answers 404/405 before any access check.
    missing = httpx.get(f"{heart_service.url}/no/such/route")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    wrong = httpx.get(f"{heart_service.url}/predict")
    assert wrong.status_code == 405
    assert wrong.json()["error"] == "method_not_allowed"


def test_no_request_path_reaches_metrics_or_the_log(heart_service: ServiceProcess) -> None:
    """A path can carry a patient's name: it must not become a metric label or a log field."""
    for path in ("/patients/Maria-Souza-CPF-52998224725", "/review/Joana-Dark-1982"):
        assert httpx.get(f"{heart_service.url}{path}").status_code == 404
        assert httpx.post(f"{heart_service.url}{path}", json={}).status_code == 404
    # Served routes whose path parameters carry the identifiers (templates: /predictions/{id}).
    assert get(heart_service, "/predictions/Maria-Souza-CPF-52998224725").status_code == 404
    v2_name = "/v2/models/Joana-Dark-1982/infer"
    assert post(heart_service, v2_name, json={"inputs": []}).status_code in (400, 404)
    assert predict(heart_service, [VALID_PATIENT]).status_code == 200
    metrics = httpx.get(f"{heart_service.url}/metrics")
    assert metrics.status_code == 200 and "medserve_request_duration_seconds" in metrics.text
    for text in (metrics.text, heart_service.log_text()):
        assert "Maria" not in text and "Joana" not in text and "52998224725" not in text


def test_service_keeps_serving_after_bad_input(heart_service: ServiceProcess) -> None:
    for _name, body, _status, _error in BAD_REQUESTS[:5]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        post(heart_service, "/predict", content=raw, headers={"content-type": "application/json"})
    assert predict(heart_service, [VALID_PATIENT]).status_code == 200


def test_prediction_is_logged_and_feedback_attaches(heart_service: ServiceProcess) -> None:
    response = predict(
        heart_service,
        [VALID_PATIENT],
    )
    prediction_id = response.json()["predictions"][0]["prediction_id"]
    stored = get(heart_service, f"/predictions/{prediction_id}").json()
    assert stored["inputs"] == VALID_PATIENT
    assert stored["request_id"] == response.json()["request_id"]
    assert stored["model_tag"] == response.json()["model_tag"]
    assert stored["outputs"]["class"] == response.json()["predictions"][0]["class"]
    ok = post(heart_service, "/feedback", json={"prediction_id": prediction_id, "label": 1})
    assert ok.status_code == 200, ok.text
    unknown = post(heart_service, "/feedback", json={"prediction_id": "0" * 26, "label": 1})
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "unknown_prediction"
    bad = post(heart_service, "/feedback", json={"prediction_id": prediction_id, "label": 2})
    assert bad.status_code == 422
    assert get(heart_service, f"/predictions/{'0' * 26}").status_code == 404


def test_concurrent_requests_are_batched(heart_service: ServiceProcess) -> None:
    patients = dataset_patients()

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(
            base_url=heart_service.url,
            headers=heart_service.auth_headers,
            limits=limits,
            timeout=60,
        ) as c:
            responses = await asyncio.gather(
                *(c.post("/predict", json={"patients": [p]}) for p in patients * 2)
            )
        return [r.status_code for r in responses]

    assert set(asyncio.run(burst())) == {200}
    metrics = httpx.get(f"{heart_service.url}/metrics").text
    count = metric_value(metrics, 'medserve_batch_size_count{model="heart_risk"}')
    total = metric_value(metrics, 'medserve_batch_size_sum{model="heart_risk"}')
    assert total / count > 1.0, (total, count)


def test_no_patient_values_in_logs(heart_service: ServiceProcess) -> None:
    secret = VALID_PATIENT | SECRET_VALUES
    assert predict(heart_service, [secret]).status_code == 200
    assert predict(heart_service, [secret | {"age": 150}]).status_code == 422
    assert predict(heart_service, [secret | {"cp": 9}]).status_code == 422
    post(
        heart_service,
        "/predict",
        content=json.dumps({"patients": [secret]})[:-5],
        headers={"content-type": "application/json"},
    )
    log = heart_service.log_text()
    assert "request rejected" in log  # the rejections were logged, without values
    for value in SECRET_VALUES.values():
        assert not re.search(rf"(?<![\d:.]){re.escape(str(value))}(?!\d)", log), value


def test_confirmed_feedback_becomes_training_data(heart_service: ServiceProcess) -> None:
    """The loop: predict -> clinician confirms -> `train --with-feedback` trains on the row."""
    patient = VALID_PATIENT | {"age": 71, "chol": 301.0}
    prediction_id = predict(heart_service, [patient]).json()["predictions"][0]["prediction_id"]
    confirmed = post(heart_service, "/feedback", json={"prediction_id": prediction_id, "label": 1})
    assert confirmed.status_code == 200
    service_home = heart_service.log_path.parent
    outcome = TRAINERS["heart_risk"](Settings(home=service_home), True)
    assert outcome.metrics["n_feedback"] >= 1
    log = PredictionLog(Settings(home=service_home).resolved_database_url)
    examples = {e.prediction_id: e for e in log.labelled("heart_risk")}
    assert examples[prediction_id].inputs == patient
    frame = feedback_frame([examples[prediction_id]])
    assert frame.loc[0, "age"] == 71 and frame.loc[0, "cad"] == 1


# -- limits before work (issue 19) ------------------------------------------------------------
# The heart service runs with MEDSERVE_MAX_BODY_BYTES=65536 and 100 instances per request; its
# workers peak at ~200-260 MB here. Every abuse below must leave that peak under this bound
# (before the fixes: a chunked 800 MiB body peaked at 1.8 GB, a 57 MiB gRPC message +820 MB).
WORKER_PEAK_BOUND_MB = 450


def _chunked_upload(service: ServiceProcess, path: str, total_bytes: int) -> tuple[bytes, int]:
    """POST `total_bytes` of JSON-looking padding as a chunked body (no Content-Length) over a
    raw socket, stopping as soon as the server answers: (response head and body, bytes sent)."""
    host, port = service.url.removeprefix("http://").split(":")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: {service.auth_headers['authorization']}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b" " * (1024 * 1024)
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        opening = b'{"patients": ['
        sock.sendall(head + f"{len(opening):x}\r\n".encode() + opening + b"\r\n")
        while sent < total_bytes:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered: stop sending
            try:
                sock.sendall(framed)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        sock.settimeout(30)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
    return answer, sent


def test_a_chunked_body_is_refused_once_it_passes_the_limit(heart_service: ServiceProcess) -> None:
    answer, sent = _chunked_upload(heart_service, "/predict", 800 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"body_too_large"' in answer
    # Refused after the limit, not after the whole body: what was sent is socket buffers' worth.
    assert sent < 64 * 1024 * 1024, sent
    assert worker_peak_rss_mb(heart_service) < WORKER_PEAK_BOUND_MB
    assert predict(heart_service, [VALID_PATIENT]).status_code == 200


def test_form_posts_have_size_and_field_limits(heart_service: ServiceProcess) -> None:
    """`POST /ui` read its form unbounded: a single 1 MB field was a 500."""
    big_field = post(heart_service, "/ui", data={"age": "1" * 1_000_000})
    assert big_field.status_code == 413 and big_field.json()["error"] == "body_too_large"
    many = post(
        heart_service,
        "/ui",
        content=b"&".join(b"f%d=1" % i for i in range(5000)),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert many.status_code == 400 and many.json()["error"] == "invalid_form"
    fine = post(heart_service, "/ui", data={k: str(v) for k, v in VALID_PATIENT.items()})
    assert fine.status_code == 200 and "form-errors" not in fine.text


def _grpc_features(rows: int, columns: int = 13) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="heart_risk")
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "features", "FP64"
    tensor.shape.extend([rows, columns])
    row = [float(VALID_PATIENT[name]) for name in FEATURE_NAMES] + [1.0] * (columns - 13)
    tensor.contents.fp64_contents.extend(row * rows)
    return request


def test_grpc_messages_are_limited_to_the_models_largest_request(
    heart_service: ServiceProcess,
) -> None:
    """57 MiB of typed contents used to be accepted and turned into Python lists (+820 MB)."""
    stub = service_pb2_grpc.GRPCInferenceServiceStub(
        grpc.insecure_channel(
            heart_service.grpc_target, options=[("grpc.max_send_message_length", 2**30)]
        )
    )
    metadata = list(heart_service.auth_headers.items())
    huge = _grpc_features(rows=57 * 1024 * 1024 // (8 * 13))
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(huge, metadata=metadata, timeout=60)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # (More rows than allowed within the limit: test_oip_v2's refusal before conversion.)
    with pytest.raises(grpc.RpcError) as wrong_shape:
        stub.ModelInfer(_grpc_features(rows=2, columns=14), metadata=metadata, timeout=30)
    assert wrong_shape.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    answered = stub.ModelInfer(_grpc_features(rows=100), metadata=metadata, timeout=30)
    assert answered.outputs[0].shape[0] == 100
    assert worker_peak_rss_mb(heart_service) < WORKER_PEAK_BOUND_MB


def test_a_huge_declared_v2_shape_is_refused_before_conversion(
    heart_service: ServiceProcess,
) -> None:
    body = {
        "inputs": [
            {"name": "features", "datatype": "FP64", "shape": [10**12, 13], "data": [1.0] * 13}
        ]
    }
    refused = post(heart_service, "/v2/models/heart_risk/infer", json=body)
    assert refused.status_code == 413 and "batch_too_large" in refused.json()["error"]
