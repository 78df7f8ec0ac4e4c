"""Open Inference Protocol v2 over HTTP and gRPC, checked with the official Triton clients."""

from __future__ import annotations

import asyncio
import importlib
import json
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
import yaml
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from medserve.catalogue import SERVICES
from medserve.heart.features import to_matrix
from tests.access_matrix import check_grpc_methods, check_http_routes
from tests.access_matrix import infer_input as matrix_input
from tests.auth_tokens import bearer
from tests.conftest import companion_env, service_env
from tests.heart_samples import VALID_PATIENT
from tests.servers import ServiceProcess, medserve_service

MODEL = "heart_risk"
EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
# One valid input tensor per model of the chart (the README's examples).
EXAMPLE_TENSORS = {
    "heart_risk": lambda: to_matrix([VALID_PATIENT]),
    "ecg_anomaly": lambda: np.array(
        [json.loads((EXAMPLES / "ecg_beat.json").read_text())], dtype=np.float32
    ),
    "ct_pattern": lambda: np.array([(EXAMPLES / "ct_slice.dcm").read_bytes()], dtype=object),
    # The first step of a consult: no answer yet asks the chief complaint.
    "respiratory_triage": lambda: np.array(
        [json.dumps({"answers": [], "strategy": "info_gain"}).encode()], dtype=object
    ),
}
TRANSPORTS = ["grpc", "http"]
CHART_VALUES = Path(__file__).resolve().parents[1] / "charts" / "medserve" / "values.yaml"


def client(service: ServiceProcess, transport: str) -> Any:
    if transport == "grpc":
        return tgrpc.InferenceServerClient(service.grpc_target)
    return thttp.InferenceServerClient(f"127.0.0.1:{service.port}")


def features(patient: dict[str, Any] = VALID_PATIENT) -> np.ndarray:
    return to_matrix([patient])


def infer_input(transport: str, array: np.ndarray, datatype: str, binary: bool = True) -> Any:
    module = tgrpc if transport == "grpc" else thttp
    tensor = module.InferInput("features", list(array.shape), datatype)
    if transport == "grpc":
        tensor.set_data_from_numpy(array)
    else:
        tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def auth(service: ServiceProcess) -> dict[str, str]:
    """The test token as headers, in a dict of its own per call: tritonclient's HTTP `infer`
    adds `Inference-Header-Content-Length` (an int) to the dict it is given."""
    return dict(service.auth_headers)


def metadata(service: ServiceProcess) -> tuple[tuple[str, str], ...]:
    """The test token as gRPC call metadata (for raw stubs)."""
    return tuple(service.auth_headers.items())


def stored(service: ServiceProcess, prediction_id: str) -> dict[str, Any]:
    """A logged prediction, as `GET /predictions/{id}` shows it."""
    url = f"{service.url}/predictions/{prediction_id}"
    response = httpx.get(url, headers=auth(service))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def native_probabilities(service: ServiceProcess, patient: dict[str, Any]) -> list[float]:
    body = httpx.post(
        f"{service.url}/predict", json={"patients": [patient]}, headers=auth(service)
    ).json()
    probabilities = body["predictions"][0]["probabilities"]
    return [probabilities["no_coronary_artery_disease"], probabilities["coronary_artery_disease"]]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_health_and_metadata(heart_service: ServiceProcess, transport: str, heart_tag: str) -> None:
    c = client(heart_service, transport)
    # Liveness and readiness answer anyone (probes); everything else needs the predict role.
    assert c.is_server_live() and c.is_server_ready()
    with pytest.raises(InferenceServerException) as refused:
        c.get_model_metadata(MODEL)
    expected = str(grpc.StatusCode.UNAUTHENTICATED) if transport == "grpc" else "401"
    assert refused.value.status() == expected
    assert c.is_model_ready(MODEL, headers=auth(heart_service))
    assert c.is_model_ready(
        MODEL, model_version=heart_tag.split(":")[1], headers=auth(heart_service)
    )
    assert not c.is_model_ready("no_such_model", headers=auth(heart_service))
    meta = (
        c.get_model_metadata(MODEL, headers=auth(heart_service), as_json=True)
        if transport == "grpc"
        else c.get_model_metadata(MODEL, headers=auth(heart_service))
    )
    assert meta["name"] == MODEL
    (features_meta,) = meta["inputs"]
    assert features_meta["name"] == "features" and features_meta["datatype"] == "FP64"
    assert [int(d) for d in features_meta["shape"]] == [-1, 13]  # gRPC JSON gives int64 as str
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "class", "prediction_id"]
    server = (
        c.get_server_metadata(headers=auth(heart_service), as_json=True)
        if transport == "grpc"
        else c.get_server_metadata(headers=auth(heart_service))
    )
    assert server["name"] == "medserve"


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("datatype", ["FP64", "FP32", "INT64"])
def test_infer_matches_the_native_api(
    heart_service: ServiceProcess, transport: str, datatype: str
) -> None:
    patient = VALID_PATIENT | {"oldpeak": 2.0}  # integral, so INT64 carries it exactly
    array = features(patient).astype(np.dtype(datatype.lower().replace("fp", "float")))
    result = client(heart_service, transport).infer(
        MODEL, [infer_input(transport, array, datatype)], headers=auth(heart_service)
    )
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (1, 2)
    np.testing.assert_allclose(
        probabilities[0], native_probabilities(heart_service, patient), atol=1e-6
    )
    assert result.as_numpy("class")[0] == int(probabilities[0, 1] >= 0.5)
    assert len(result.as_numpy("prediction_id")[0]) == 26


def test_http_json_and_binary_tensors_agree(heart_service: ServiceProcess) -> None:
    c = client(heart_service, "http")
    array = features()
    answers = []
    for binary in (False, True):
        outputs = [thttp.InferRequestedOutput("probabilities", binary_data=binary)]
        tensors = [infer_input("http", array, "FP64", binary)]
        result = c.infer(MODEL, tensors, outputs=outputs, headers=auth(heart_service))
        answers.append(result.as_numpy("probabilities"))
        assert result.get_output("class") is None  # only the requested output comes back
    np.testing.assert_array_equal(answers[0], answers[1])


def test_grpc_typed_contents_and_raw_bytes_agree(heart_service: ServiceProcess) -> None:
    row = features()[0]
    stub = service_pb2_grpc.GRPCInferenceServiceStub(
        grpc.insecure_channel(heart_service.grpc_target)
    )
    typed = service_pb2.ModelInferRequest(model_name=MODEL)
    tensor = typed.inputs.add(name="features", datatype="FP64", shape=[1, 13])
    tensor.contents.fp64_contents.extend(np.nan_to_num(row, nan=0).tolist())
    raw = service_pb2.ModelInferRequest(model_name=MODEL, raw_input_contents=[row.tobytes()])
    raw.inputs.add(name="features", datatype="FP64", shape=[1, 13])
    token = metadata(heart_service)
    a, b = stub.ModelInfer(typed, metadata=token), stub.ModelInfer(raw, metadata=token)
    assert a.raw_output_contents[0] == b.raw_output_contents[0]  # same probabilities
    assert a.parameters["model_tag"].string_param.startswith(f"{MODEL}:")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_v2_predictions_go_to_the_shared_log(heart_service: ServiceProcess, transport: str) -> None:
    result = client(heart_service, transport).infer(
        MODEL, [infer_input(transport, features(), "FP64")], headers=auth(heart_service)
    )
    prediction_id = result.as_numpy("prediction_id")[0].decode()
    record = stored(heart_service, prediction_id)
    assert record["api"] == ("grpc" if transport == "grpc" else "v2_rest")
    assert record["inputs"]["chol"] == VALID_PATIENT["chol"]


def test_official_client_streams_answers_and_errors_by_request_id(
    heart_service: ServiceProcess,
) -> None:
    """tritonclient's `start_stream` / `async_stream_infer` on a live service: every request of
    the stream is answered under its id, a bad one with an error, and all land in the log."""
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    c = tgrpc.InferenceServerClient(heart_service.grpc_target)
    c.start_stream(
        callback=lambda result, error: answers.put((result, error)),
        headers=auth(heart_service),  # the stream's metadata: one check per stream
    )
    rows = to_matrix([VALID_PATIENT] * 3)
    rows[1, 4] = 999.0  # cholesterol out of range
    try:
        for i, row in enumerate(rows):
            c.async_stream_infer(
                MODEL, [infer_input("grpc", row[None, :], "FP64")], request_id=f"s{i}"
            )
        got = [answers.get(timeout=30) for _ in rows]
    finally:
        c.stop_stream()
    by_id = {r.get_response().id: r for r, e in got if e is None}
    errors = [e for _, e in got if e is not None]
    assert set(by_id) == {"s0", "s2"}
    assert len(errors) == 1 and "features.0.chol" in str(errors[0])
    prediction_id = by_id["s2"].as_numpy("prediction_id")[0].decode()
    record = stored(heart_service, prediction_id)
    assert record["api"] == "grpc_stream" and record["request_id"] == "s2"


def _bad_cases() -> list[tuple[str, dict[str, Any]]]:
    row = features()
    return [
        ("wrong shape", {"array": row[:, :12], "status": 400, "code": "invalid_tensor"}),
        ("out of range", {"array": np.where(np.arange(13) == 4, 999.0, row), "status": 400,
                          "code": "invalid_tensor", "text": "80-700 mg/dl"}),
        ("NaN in a number", {"array": np.where(np.arange(13) == 3, np.nan, row), "status": 400,
                             "code": "invalid_tensor"}),
        ("unknown code", {"array": np.where(np.arange(13) == 2, 7.0, row), "status": 400,
                          "code": "invalid_tensor", "text": "asymptomatic"}),
        ("unknown model", {"array": row, "model": "nope", "status": 404,
                           "code": "model_not_found"}),
        ("unknown version", {"array": row, "version": "v999", "status": 404,
                             "code": "model_not_found"}),
        ("unknown output", {"array": row, "output": "logits", "status": 400,
                            "code": "invalid_tensor"}),
        ("wrong datatype", {"array": row.astype(np.float16), "datatype": "FP16", "status": 400,
                            "code": "invalid_tensor"}),
    ]  # fmt: skip


GRPC_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("name", "case"), _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_requests_get_protocol_errors(
    heart_service: ServiceProcess, transport: str, name: str, case: dict[str, Any]
) -> None:
    module = tgrpc if transport == "grpc" else thttp
    tensor = infer_input(transport, case["array"], case.get("datatype", "FP64"))
    outputs = [module.InferRequestedOutput(case["output"])] if "output" in case else None
    with pytest.raises(InferenceServerException) as raised:
        client(heart_service, transport).infer(
            case.get("model", MODEL),
            [tensor],
            model_version=case.get("version", ""),
            outputs=outputs,
            headers=auth(heart_service),
        )
    status = raised.value.status()
    if transport == "grpc":
        assert status == str(GRPC_CODES[case["status"]])
    else:
        assert status == str(case["status"])
    assert raised.value.message().startswith(case["code"])
    assert case.get("text", "") in raised.value.message()
    # The service keeps serving.
    assert client(heart_service, transport).is_server_ready()


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b'{"inputs": [', {}, 400),
        (b'{"inputs": []}', {}, 400),
        (b'{"inputs": [{"name": "features", "shape": [1, 13], "datatype": "FP64", "data": [1]}]}',
         {}, 400),
        (b'{"inputs": [{"name": "features", "shape": [1, 13], "datatype": "FP64",'
         b' "parameters": {"binary_data_size": 104}}]}', {"Inference-Header-Content-Length": "87"},
         400),
        (b"{}", {"Inference-Header-Content-Length": "9999"}, 400),
    ],
)  # fmt: skip
def test_rest_malformed_requests_are_400_in_the_protocol_shape(
    heart_service: ServiceProcess, body: bytes, headers: dict[str, str], status: int
) -> None:
    response = httpx.post(
        f"{heart_service.url}/v2/models/{MODEL}/infer",
        content=body,
        headers=heart_service.auth_headers | headers,
    )
    assert response.status_code == status, response.text
    payload = response.json()
    assert isinstance(payload["error"], str) and ": " in payload["error"]
    assert payload["request_id"]


def test_grpc_raw_contents_of_the_wrong_size_are_invalid(heart_service: ServiceProcess) -> None:
    stub = service_pb2_grpc.GRPCInferenceServiceStub(
        grpc.insecure_channel(heart_service.grpc_target)
    )
    request = service_pb2.ModelInferRequest(model_name=MODEL, raw_input_contents=[b"\0" * 10])
    request.inputs.add(name="features", datatype="FP64", shape=[1, 13])
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(request, metadata=metadata(heart_service))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_health_checking(heart_service: ServiceProcess) -> None:
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(heart_service.grpc_target))
    for service in ("", "inference.GRPCInferenceService"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_grpc_reflection_describes_the_service(heart_service: ServiceProcess) -> None:
    """What grpcurl relies on: the service and its messages are discoverable without .proto."""
    database = ProtoReflectionDescriptorDatabase(grpc.insecure_channel(heart_service.grpc_target))
    assert "inference.GRPCInferenceService" in set(database.get_services())
    pool = descriptor_pool.DescriptorPool(database)
    method = pool.FindServiceByName("inference.GRPCInferenceService").FindMethodByName("ModelInfer")
    assert method.input_type.full_name == "inference.ModelInferRequest"


def _batch_totals(service: ServiceProcess) -> tuple[float, float]:
    totals = {}
    for line in httpx.get(f"{service.url}/metrics").text.splitlines():
        for kind in ("sum", "count"):
            if line.startswith(f'medserve_batch_size_{kind}{{model="{MODEL}"}}'):
                totals[kind] = float(line.rsplit(" ", 1)[1])
    return totals["sum"], totals["count"]


def test_concurrent_grpc_calls_are_batched(heart_service: ServiceProcess) -> None:
    request = service_pb2.ModelInferRequest(
        model_name=MODEL, raw_input_contents=[features().tobytes()]
    )
    request.inputs.add(name="features", datatype="FP64", shape=[1, 13])

    async def burst() -> None:
        channels = [grpc.aio.insecure_channel(heart_service.grpc_target) for _ in range(4)]
        stubs = [service_pb2_grpc.GRPCInferenceServiceStub(ch) for ch in channels]
        token = metadata(heart_service)
        await asyncio.gather(
            *(stubs[i % 4].ModelInfer(request, metadata=token) for i in range(400))
        )
        for channel in channels:
            await channel.close()

    sum_before, count_before = _batch_totals(heart_service)
    asyncio.run(burst())
    sum_after, count_after = _batch_totals(heart_service)
    assert sum_after - sum_before == 400
    assert (sum_after - sum_before) / (count_after - count_before) > 1.0


def _chart_services() -> list[dict[str, Any]]:
    return yaml.safe_load(CHART_VALUES.read_text())["services"]


def test_every_service_in_bentos_is_in_the_chart() -> None:
    listed = {s["bento"].split(":")[0] for s in _chart_services()}
    modules = {f"bentos.{p.stem}" for p in (CHART_VALUES.parents[2] / "bentos").glob("*.py")}
    assert modules - {"bentos.__init__"} == listed


def test_chart_and_catalogue_agree_on_services_and_ports() -> None:
    chart = {s["name"]: (s["bento"], s["httpPort"], s["grpcPort"]) for s in _chart_services()}
    catalogue = {e.model: (e.target, e.http_port, e.grpc_port) for e in SERVICES.values()}
    assert chart == catalogue


# The session fixture that trains each chart service's model (a new service adds its line).
MODEL_FIXTURES = {
    "heart_risk": "heart_tag",
    "ecg_anomaly": "ecg_tag",
    "ct_pattern": "ct_trained",
    "respiratory_triage": "triage_tag",
}


@pytest.fixture(scope="module", params=_chart_services(), ids=lambda s: s["name"])
def chart_service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, Any], ServiceProcess]]:
    spec = request.param
    home = tmp_path_factory.mktemp(f"chart-{spec['name']}")
    trained = request.getfixturevalue(MODEL_FIXTURES[spec["name"]])
    tag = trained["tag"] if isinstance(trained, dict) else trained
    env = service_env(home, **{f"MEDSERVE_{spec['name'].upper()}_MODEL_TAG": tag})
    env |= companion_env(request, spec["bento"])
    with medserve_service(spec["bento"], home, env) as service:
        yield spec, service


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_chart_service_answers_v2_metadata_and_infer(
    chart_service: tuple[dict[str, Any], ServiceProcess], transport: str
) -> None:
    spec, service = chart_service
    module_name, class_name = spec["bento"].split(":")
    model_class = getattr(importlib.import_module(module_name), class_name).inner.model_class
    c = client(service, transport)
    meta = (
        c.get_model_metadata(spec["name"], headers=auth(service), as_json=True)
        if transport == "grpc"
        else (c.get_model_metadata(spec["name"], headers=auth(service)))
    )
    assert meta["name"] == spec["name"]
    module = tgrpc if transport == "grpc" else thttp
    (spec_in,) = model_class.v2_inputs
    array = EXAMPLE_TENSORS[spec["name"]]()
    tensor = module.InferInput(spec_in.name, list(array.shape), spec_in.datatype)
    tensor.set_data_from_numpy(array)
    result = c.infer(spec["name"], [tensor], headers=auth(service))
    for output in model_class.v2_outputs:
        assert result.as_numpy(output.name) is not None
    assert json.dumps(meta)  # metadata is plain JSON-able


def test_chart_service_refuses_anonymous_callers_and_wrong_roles(
    chart_service: tuple[dict[str, Any], ServiceProcess],
) -> None:
    """The role matrix of every service (local tokens): each route and gRPC method refuses
    no token (401 / UNAUTHENTICATED) and every role but its own (403 / PERMISSION_DENIED)."""
    spec, service = chart_service
    module_name, class_name = spec["bento"].split(":")
    model_class = getattr(importlib.import_module(module_name), class_name).inner.model_class
    headers_for = lambda roles: bearer(*roles)  # noqa: E731
    assert check_http_routes(service, spec["bento"], spec["name"], headers_for) > 30
    (spec_in,) = model_class.v2_inputs
    tensor = matrix_input(spec_in.name, EXAMPLE_TENSORS[spec["name"]](), spec_in.datatype)
    check_grpc_methods(service, spec["name"], tensor, headers_for)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_too_many_rows_are_refused_before_conversion(
    heart_service: ServiceProcess, transport: str
) -> None:
    rows = np.repeat(features(), 101, axis=0)  # the fixture allows 100 instances per request
    with pytest.raises(InferenceServerException) as raised:
        client(heart_service, transport).infer(
            MODEL, [infer_input(transport, rows, "FP64")], headers=auth(heart_service)
        )
    assert raised.value.message().startswith("batch_too_large")
    expected = str(grpc.StatusCode.INVALID_ARGUMENT) if transport == "grpc" else "413"
    assert raised.value.status() == expected


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_free_text_request_ids_never_reach_the_log(
    heart_service: ServiceProcess, transport: str
) -> None:
    """A client-chosen id is stored and logged only if it is a well-formed id."""
    secret = "Maria da Silva CPF 123.456.789-09"
    result = client(heart_service, transport).infer(
        MODEL,
        [infer_input(transport, features(), "FP64")],
        request_id=secret,
        headers=auth(heart_service),
    )
    prediction_id = result.as_numpy("prediction_id")[0].decode()
    record = stored(heart_service, prediction_id)
    assert record["request_id"] != secret and len(record["request_id"]) == 26
    well_formed = "client-req-42"
    result = client(heart_service, transport).infer(
        MODEL,
        [infer_input(transport, features(), "FP64")],
        request_id=well_formed,
        headers=auth(heart_service),
    )
    prediction_id = result.as_numpy("prediction_id")[0].decode()
    assert stored(heart_service, prediction_id)["request_id"] == well_formed
    assert secret not in heart_service.log_text()
