"""The serving layer in-process, on a small fake model: admission, validation and its error
shape, batching, failures, the prediction log, metrics, drift, and every adapter (JSON, OIP v2
REST, gRPC unary and streaming) over the one data plane. Milliseconds per test; the subprocess
tests keep only what needs a real `bentoml serve`."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as triton_aio
from prometheus_client import REGISTRY
from tritonclient.grpc import InferInput
from tritonclient.utils import InferenceServerException

from medserve.audit import AuditTrail
from medserve.auth.authenticator import Authenticator
from medserve.auth.settings import AuthSettings
from medserve.logs import JsonFormatter, get_logger
from medserve.prediction_log import PredictionLog, PredictionRecord, new_id, utcnow
from medserve.serving.dataplane import DataPlane
from medserve.serving.http_api import HttpApi
from medserve.serving.http_security import HttpAccess
from medserve.serving.oip_grpc import start_grpc_server
from medserve.serving.service import http_api
from medserve.settings import Settings
from tests.auth_tokens import client_headers
from tests.fake_model import FakeModel, PointAnswer
from tests.servers import free_port, upgrade_once

T = TypeVar("T")
JSON = {"content-type": "application/json"}


# One event loop per test, as in a worker: the adaptive batcher lives on the loop it started on.
_LOOP = asyncio.Runner()


@dataclass
class Serving:
    model: FakeModel
    plane: DataPlane
    http: HttpApi
    settings: Settings
    authenticator: Authenticator


def make_serving(tmp_path: Path, **overrides: Any) -> Serving:
    settings = Settings(
        home=tmp_path,
        grpc_port=free_port(),
        drift_window=20,
        drift_min_samples=5,
        max_instances_per_request=50,
        max_body_bytes=8192,
        **overrides,
    )
    model = FakeModel()
    upgrade_once(settings.resolved_database_url)
    plane = DataPlane(model, settings, PredictionLog(settings.resolved_database_url))
    # The session's signing key (conftest), so `client_headers()` tokens are trusted; the
    # test client's Host is `test`.
    auth_settings = AuthSettings(
        local_key_file=AuthSettings().key_file,
        allowed_hosts=["test", "127.0.0.1"],
        csrf_secret="x" * 32,
    )
    authenticator = Authenticator(auth_settings)
    api = http_api()
    api.attach(plane, HttpAccess(authenticator, AuditTrail(plane.log.engine), auth_settings))
    return Serving(model, plane, api, settings, authenticator)


@pytest.fixture(autouse=True)
def event_loop_per_test() -> Iterator[None]:
    global _LOOP
    _LOOP = asyncio.Runner()
    try:
        yield
    finally:
        _LOOP.close()


@pytest.fixture
def serving(tmp_path: Path) -> Serving:
    return make_serving(tmp_path)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """What the platform's JSON log lines would say during the test."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = get_logger("medserve")
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def run(work: Callable[[httpx.AsyncClient], Awaitable[T]], api: HttpApi) -> T:
    """`work` with a client of the app that sends a token with every role a test needs."""

    async def main() -> T:
        transport = httpx.ASGITransport(app=api.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=client_headers()
        ) as client:
            return await work(client)

    return _LOOP.run(main())


def post(api: HttpApi, path: str, body: Any, headers: dict[str, str] = JSON) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return run(lambda c: c.post(path, content=content, headers=headers), api)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": "fake", **labels}) or 0.0


def requests_counted(api: str, outcome: str) -> float:
    return sample("medserve_request_duration_seconds_count", api=api, outcome=outcome)


# -- JSON API -------------------------------------------------------------------------------------
def test_predict_answers_every_instance_logs_it_and_counts_it(serving: Serving) -> None:
    before = requests_counted("http_json", "ok")
    points = [{"x": 2.0, "flag": 0}, {"x": 7.5, "flag": 1}, {"x": 10, "flag": 1}]
    response = post(serving.http, "/predict", {"points": points})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "fake" and body["model_tag"] == "fake:v1"
    assert body["request_id"] == response.headers["x-request-id"]
    answers = [PointAnswer.model_validate(a) for a in body["predictions"]]
    assert [a.score for a in answers] == [0.2, 0.75, 1.0]
    assert [a.positive for a in answers] == [False, True, True]
    assert answers[1].scores == {"low": 0.25, "high": 0.75}  # keyed column -> dict
    assert len({a.prediction_id for a in answers}) == 3
    for answer, point in zip(answers, points, strict=True):
        record = serving.plane.log.get(answer.prediction_id)
        assert record is not None and record.api == "http_json"
        assert record.inputs == {"x": point["x"], "flag": point["flag"]}
        assert record.outputs == {
            "score": answer.score,
            "positive": answer.positive,
            "scores": answer.scores,
        }  # neither the prediction id nor the unlogged `detail` column
        assert record.predicted_class == int(answer.positive)
        assert record.request_id == body["request_id"]
    assert requests_counted("http_json", "ok") == before + 1


@pytest.mark.parametrize(
    ("body", "headers", "status", "error", "field"),
    [
        (b"{not json", JSON, 400, "malformed_json", None),
        ({"points": [{"x": 1, "flag": 0}]}, {"content-type": "text/plain"}, 415,
         "unsupported_media_type", None),
        ({"points": [{"x": 11.5, "flag": 0}]}, JSON, 422, "validation_error", "points.0.x"),
        ({"points": [{"x": 1, "flag": 0, "name": "Ana"}]}, JSON, 422, "validation_error",
         "points.0.name"),
        ({"points": [{"x": "1", "flag": 0}]}, JSON, 422, "validation_error", "points.0.x"),
        ({"points": []}, JSON, 422, "validation_error", "points"),
        ({"points": [{"x": 1, "flag": 0}] * 51}, JSON, 413, "batch_too_large", "points"),
        ({"points": [{"x": 1, "flag": 0}] * 400}, JSON, 413, "body_too_large", None),
    ],
)  # fmt: skip
def test_refusals_share_one_shape_and_are_counted_by_reason(
    serving: Serving,
    body: Any,
    headers: dict[str, str],
    status: int,
    error: str,
    field: str | None,
) -> None:
    before = sample("medserve_rejected_requests_total", reason=error)
    response = post(serving.http, "/predict", body, headers)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["error"] == error and payload["field"] == field
    assert payload["request_id"] == response.headers["x-request-id"]
    assert sample("medserve_rejected_requests_total", reason=error) == before + 1
    if error == "validation_error" and field == "points.0.x":
        assert "allowed: 0-10" in payload["detail"]  # the field's rule, from the model


def test_unknown_paths_and_methods_answer_in_the_shared_shape_without_echoing_the_path(
    serving: Serving,
) -> None:
    missing = run(lambda c: c.get("/patients/Maria-Souza-12345678909"), serving.http)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert "Maria" not in missing.text
    wrong = run(lambda c: c.delete("/predict"), serving.http)
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"


def test_a_refusal_is_logged_with_the_route_template_and_never_a_value(
    serving: Serving, json_log: io.StringIO
) -> None:
    post(serving.http, "/predict", {"points": [{"x": 987.654321, "flag": 0}]})
    run(lambda c: c.get("/predictions/01JSECRETSECRETSECRETSECRE"), serving.http)
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    rejected = [line for line in lines if line["event"] == "request rejected"]
    assert {line["route"] for line in rejected} == {"/predict", "/predictions/{prediction_id}"}
    text = json.dumps(lines)
    assert "987.654321" not in text and "SECRET" not in text


def test_the_access_log_names_route_templates_never_raw_paths(
    tmp_path: Path, json_log: io.StringIO
) -> None:
    """`MEDSERVE_ACCESS_LOG` logs every served call by its route template: a path parameter
    (a prediction id, a v2 model name) is the caller's text and can carry a patient's name."""
    serving = make_serving(tmp_path, access_log=True)
    assert post(serving.http, "/predict", {"points": [{"x": 1.0, "flag": 0}]}).status_code == 200
    run(lambda c: c.get("/predictions/Maria-Souza-CPF-52998224725"), serving.http)
    run(lambda c: c.get("/v2/models/Joana-Dark-1982"), serving.http)
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    served = [line for line in lines if line["event"] == "request served"]
    assert [line["route"] for line in served] == ["/predict"]
    routes = {line.get("route") for line in lines}
    assert {"/predictions/{prediction_id}", "/v2/models/{model}"} <= routes
    text = json.dumps(lines)
    assert "Maria" not in text and "Joana" not in text and "52998224725" not in text


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(serving: Serving) -> None:
    serving.model.delay_s = 0.005

    async def flood(client: httpx.AsyncClient) -> list[httpx.Response]:
        bodies = [json.dumps({"points": [{"x": i / 4, "flag": 0}]}) for i in range(40)]
        return await asyncio.gather(
            *(client.post("/predict", content=b, headers=JSON) for b in bodies)
        )

    responses = run(flood, serving.http)
    assert [r.json()["predictions"][0]["score"] for r in responses] == [i / 40 for i in range(40)]
    assert sum(serving.model.batches) == 40
    assert max(serving.model.batches) > 1


def test_a_failing_model_is_a_500_that_leaks_nothing_and_the_service_keeps_serving(
    serving: Serving, json_log: io.StringIO
) -> None:
    before = requests_counted("http_json", "internal_error")
    serving.model.fail_with = RuntimeError("Maria Souza, CPF 123.456.789-09")
    failed = post(serving.http, "/predict", {"points": [{"x": 1, "flag": 0}]})
    assert failed.status_code == 500 and failed.json()["error"] == "internal_error"
    assert "Maria" not in failed.text
    err = json_log.getvalue()
    assert "RuntimeError" in err and "Maria" not in err
    assert requests_counted("http_json", "internal_error") == before + 1
    serving.model.fail_with = None
    assert post(serving.http, "/predict", {"points": [{"x": 1, "flag": 0}]}).status_code == 200


def test_a_client_that_leaves_mid_body_is_its_own_outcome_not_a_server_error(
    serving: Serving, json_log: io.StringIO
) -> None:
    """Seen under load in the suite: a disconnect while the body was read was a 500 and an
    `unhandled error`, which the server-error alert counts."""
    server_errors = requests_counted("http_json", "internal_error")
    left = requests_counted("http_json", "client_closed_request")
    messages = iter(
        [
            {"type": "http.request", "body": b'{"points": [', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"host", b"test"), (b"content-type", b"application/json")]
    headers += [(k.lower().encode(), v.encode()) for k, v in client_headers().items()]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("test", 80),
    }  # fmt: skip
    _LOOP.run(serving.http.app(scope, receive, send))
    assert requests_counted("http_json", "client_closed_request") == left + 1
    assert requests_counted("http_json", "internal_error") == server_errors
    assert "unhandled error" not in json_log.getvalue()
    assert post(serving.http, "/predict", {"points": [{"x": 1, "flag": 0}]}).status_code == 200


def test_an_overloaded_queue_sheds_with_503(tmp_path: Path) -> None:
    serving = make_serving(tmp_path, max_latency_ms=20, max_batch_size=1)
    serving.model.delay_s = 0.03

    async def flood(client: httpx.AsyncClient) -> list[httpx.Response]:
        body = json.dumps({"points": [{"x": 1, "flag": 0}]})
        return await asyncio.gather(
            *(client.post("/predict", content=body, headers=JSON) for _ in range(30))
        )

    statuses = [r.status_code for r in run(flood, serving.http)]
    assert 503 in statuses and 200 in statuses
    assert set(statuses) <= {200, 503}


@pytest.mark.parametrize(
    ("given", "kept"),
    [("trace-42.a:b", True), ("Maria Souza", False), ("x" * 65, False)],
)
def test_request_ids_pass_through_only_when_well_formed(
    serving: Serving, given: str, kept: bool
) -> None:
    response = post(
        serving.http, "/predict", {"points": [{"x": 1, "flag": 0}]}, JSON | {"x-request-id": given}
    )
    assert (response.headers["x-request-id"] == given) is kept
    prediction_id = response.json()["predictions"][0]["prediction_id"]
    record = serving.plane.log.get(prediction_id)
    assert record is not None and (record.request_id == given) is kept


def test_a_prediction_is_read_back_and_feedback_attaches_to_it(serving: Serving) -> None:
    answer = post(serving.http, "/predict", {"points": [{"x": 9, "flag": 1}]}).json()
    prediction_id = answer["predictions"][0]["prediction_id"]
    read = run(lambda c: c.get(f"/predictions/{prediction_id}"), serving.http)
    assert read.status_code == 200 and read.json()["outputs"]["score"] == 0.9
    listed = run(lambda c: c.get("/predictions?predicted_class=1&limit=5"), serving.http).json()
    assert [r["id"] for r in listed] == [prediction_id]
    feedback = {"prediction_id": prediction_id, "label": 0, "reviewer": "dr-ana"}
    assert post(serving.http, "/feedback", feedback).status_code == 200
    assert serving.plane.log.feedback_of(prediction_id) == {"label": 0}
    unknown = {"prediction_id": "0" * 26, "label": 1}
    assert post(serving.http, "/feedback", unknown).status_code == 404
    bad_query = run(lambda c: c.get("/predictions?limit=9999"), serving.http)
    assert bad_query.status_code == 422 and bad_query.json()["field"] == "limit"


def test_another_models_prediction_is_neither_shown_nor_labelled(serving: Serving) -> None:
    """The log is shared by every service: each shows and labels only its own model's rows."""
    other_id = new_id()
    serving.plane.log.record(
        [
            PredictionRecord(
                id=other_id,
                model="heart_risk",
                model_tag="heart_risk:x",
                request_id="r",
                api="http_json",
                created_at=utcnow(),
                inputs={"age": 63},
                outputs={"probability": 0.9},
                predicted_class=1,
            )
        ]
    ).result(timeout=10)
    read = run(lambda c: c.get(f"/predictions/{other_id}"), serving.http)
    # Not `"63" not in read.text`: the request id, a random ULID, may hold those digits.
    assert read.status_code == 404 and read.json()["error"] == "unknown_prediction"
    assert "inputs" not in read.json() and "age" not in read.text
    listed = run(lambda c: c.get("/predictions?limit=500"), serving.http).json()
    assert other_id not in {row["id"] for row in listed}
    labelled = post(serving.http, "/feedback", {"prediction_id": other_id, "label": 0})
    assert labelled.status_code == 404
    assert serving.plane.log.feedback_of(other_id) is None


def test_drift_gauges_are_exported_once_the_window_has_enough_rows(serving: Serving) -> None:
    points = [{"x": 9.5, "flag": 1}] * 10  # far from the uniform reference
    assert post(serving.http, "/predict", {"points": points}).status_code == 200

    async def exported() -> float:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            value = sample("medserve_feature_psi", feature="x")
            if value:
                return value
            await asyncio.sleep(0.05)
        raise AssertionError("no PSI exported within 5 s")

    assert run(lambda _: exported(), serving.http) > serving.settings.drift_psi_threshold
    assert sample("medserve_drift_window_samples") == 10


def test_before_the_model_is_attached_probes_answer_and_everything_else_is_503() -> None:
    api = http_api()
    assert post(api, "/predict", {"points": [{"x": 1, "flag": 0}]}).json()["error"] == "not_ready"
    assert run(lambda c: c.get("/v2/health/live"), api).status_code == 200
    assert run(lambda c: c.get("/v2/health/ready"), api).status_code == 503


# -- Open Inference Protocol v2 over REST --------------------------------------------------------
def v2_body(points: list[list[float]], **extra: Any) -> dict[str, Any]:
    tensor = {"name": "points", "shape": [len(points), 2], "datatype": "FP64", "data": points}
    return {"inputs": [tensor], **extra}


def test_v2_rest_answers_the_declared_output_tensors(serving: Serving) -> None:
    response = post(serving.http, "/v2/models/fake/infer", v2_body([[2, 0], [8, 1]], id="r-1"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "r-1" and body["model_version"] == "v1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert list(outputs) == ["score", "positive", "detail", "prediction_id"]
    assert outputs["score"]["data"] == [0.2, 0.8] and outputs["score"]["datatype"] == "FP64"
    assert outputs["positive"]["data"] == [False, True]
    assert outputs["detail"]["shape"] == [2, 3] and outputs["detail"]["datatype"] == "FP32"
    ids = outputs["prediction_id"]["data"]
    record = serving.plane.log.get(ids[1])
    assert record is not None and record.api == "v2_rest" and record.request_id == "r-1"
    assert serving.model.trusted_calls == 1  # valid tensors took the vectorised path


def test_v2_rest_binary_outputs_and_requested_subset(serving: Serving) -> None:
    body = v2_body([[5, 1]], outputs=[{"name": "score", "parameters": {"binary_data": True}}])
    response = post(serving.http, "/v2/models/fake/infer", body)
    header_length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:header_length])
    assert [o["name"] for o in header["outputs"]] == ["score"]
    raw = response.content[header_length:]
    assert np.frombuffer(raw, dtype="<f8").tolist() == [0.5]


@pytest.mark.parametrize(
    ("body", "status", "error", "field"),
    [
        (v2_body([[2, 0], [11, 1]]), 400, "invalid_tensor", "points.1.x"),
        (v2_body([[2, 0.5]]), 400, "invalid_tensor", "points.0.flag"),
        ({"inputs": [{"name": "points", "shape": [1, 3], "datatype": "FP64",
                      "data": [1, 0, 0]}]}, 400, "invalid_tensor", None),
        ({"inputs": [{"name": "points", "shape": [1, 2], "datatype": "INT64",
                      "data": [1, 0]}]}, 400, "invalid_tensor", "points"),
        ({"inputs": [{"name": "other", "shape": [1, 2], "datatype": "FP64",
                      "data": [1, 0]}]}, 400, "invalid_tensor", "other"),
        (v2_body([[1, 0]], outputs=[{"name": "nope"}]), 400, "invalid_tensor", "nope"),
        (v2_body([[1, 0]] * 51), 413, "batch_too_large", None),
    ],
)  # fmt: skip
def test_v2_rest_refusals_name_the_tensor_row_and_field(
    serving: Serving, body: dict[str, Any], status: int, error: str, field: str | None
) -> None:
    response = post(serving.http, "/v2/models/fake/infer", body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["error"].startswith(f"{error}: ")  # the protocol's message field
    assert payload["field"] == field


def test_v2_rest_unknown_model_or_version_is_404(serving: Serving) -> None:
    for path in ("/v2/models/other/infer", "/v2/models/fake/versions/v9/infer"):
        assert post(serving.http, path, v2_body([[1, 0]])).status_code == 404
    assert post(serving.http, "/v2/models/fake/versions/v1/infer", v2_body([[1, 0]])).is_success


def test_v2_metadata_comes_from_the_declared_tensors(serving: Serving) -> None:
    meta = run(lambda c: c.get("/v2/models/fake"), serving.http).json()
    assert meta["inputs"] == [{"name": "points", "datatype": "FP64", "shape": [-1, 2]}]
    assert [o["name"] for o in meta["outputs"]] == ["score", "positive", "detail", "prediction_id"]


# -- Open Inference Protocol v2 over gRPC --------------------------------------------------------
def grpc_input(points: list[list[float]]) -> InferInput:
    tensor = InferInput("points", [len(points), 2], "FP64")
    tensor.set_data_from_numpy(np.array(points, dtype=np.float64))
    return tensor


async def with_grpc(
    serving: Serving, work: Callable[[triton_aio.InferenceServerClient], Awaitable[T]]
) -> T:
    server = await start_grpc_server(serving.plane, serving.settings, serving.authenticator)
    client = triton_aio.InferenceServerClient(f"127.0.0.1:{serving.settings.grpc_port}")
    try:
        return await work(client)
    finally:
        await client.close()
        await server.stop(grace=None)


def test_grpc_unary_infer_and_its_status_codes(serving: Serving) -> None:
    async def work(client: triton_aio.InferenceServerClient) -> None:
        result = await client.infer(
            "fake", [grpc_input([[3, 0], [6, 1]])], request_id="g-1", headers=client_headers()
        )
        assert result.as_numpy("score").tolist() == [0.3, 0.6]
        assert result.get_response().id == "g-1"
        (prediction_id,) = result.as_numpy("prediction_id")[1:]
        assert serving.plane.log.get(prediction_id.decode()).api == "grpc"  # type: ignore[union-attr]
        with pytest.raises(InferenceServerException) as invalid:
            await client.infer("fake", [grpc_input([[30, 0]])], headers=client_headers())
        assert invalid.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT)
        assert "points.0.x" in invalid.value.message()
        with pytest.raises(InferenceServerException) as unknown:
            await client.infer("other", [grpc_input([[3, 0]])], headers=client_headers())
        assert unknown.value.status() == str(grpc.StatusCode.NOT_FOUND)
        assert await client.is_server_ready()  # open: a probe
        assert await client.is_model_ready("fake", headers=client_headers())

    _LOOP.run(with_grpc(serving, work))


def test_grpc_streams_answer_every_request_by_id_and_batch_them_together(
    serving: Serving,
) -> None:
    serving.model.delay_s = 0.005
    before = requests_counted("grpc_stream", "ok")

    async def requests() -> AsyncIterator[dict[str, Any]]:
        for i in range(60):
            points = [[11.0, 0.0]] if i == 17 else [[i / 6, 0.0]]
            yield {"model_name": "fake", "inputs": [grpc_input(points)], "request_id": f"s-{i}"}

    async def work(client: triton_aio.InferenceServerClient) -> list[Any]:
        stream = client.stream_infer(requests(), headers=client_headers())
        return [item async for item in stream]

    answers = _LOOP.run(with_grpc(serving, work))
    assert len(answers) == 60
    scores = {}
    errors = []
    for result, error in answers:
        if error is not None:
            errors.append(error)
            continue
        scores[result.get_response().id] = result.as_numpy("score")[0]
    assert len(errors) == 1 and "points.0.x" in errors[0].message()
    assert scores == {f"s-{i}": pytest.approx(i / 60) for i in range(60) if i != 17}
    assert max(serving.model.batches) > 1  # requests of one stream batched together
    assert requests_counted("grpc_stream", "ok") == before + 59


def test_a_log_read_that_cannot_be_audited_is_not_answered(serving: Serving) -> None:
    """Fail closed: patient data is not shown without a record of who saw it."""
    post(serving.http, "/predict", {"points": [{"x": 4, "flag": 1}]})
    with serving.plane.log.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE audit_log")
    answer = run(lambda c: c.get("/predictions"), serving.http)
    assert answer.status_code == 500 and answer.json()["error"] == "internal_error"
    assert answer.json()["detail"] == "unexpected server error"  # no row, no database text
