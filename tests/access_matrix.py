"""The role matrix of a live service: every route (HTTP) and every gRPC method, called without a
token, with every role but the one it needs, and with only that role.

`headers_for(roles)` makes the `authorization` header of a token with those roles (local tokens
or a test IdP's), so the same matrix runs in every auth mode.
"""

from __future__ import annotations

import contextlib
import importlib
import queue
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import httpx
import numpy as np
import tritonclient.grpc as tgrpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from medserve.auth.roles import IMPLIED, Role
from medserve.prediction_log import new_id
from medserve.serving.http_api import HttpRoute
from tests.servers import ServiceProcess

HeadersFor = Callable[[Sequence[Role]], dict[str, str]]


def service_routes(target: str) -> tuple[HttpRoute, ...]:
    """The HTTP routes of a `bentos.x:Cls` target."""
    module = importlib.import_module(target.split(":")[0])
    return module.http.routes  # type: ignore[no-any-return]


def concrete_path(path: str, model: str) -> str:
    return (
        path.replace("{model}", model)
        .replace("{version}", "1")
        .replace("{prediction_id}", new_id())
    )


def roles_lacking(role: Role) -> list[Role]:
    """Every role that neither is nor implies `role`."""
    return [r for r in Role if r != role and role not in IMPLIED.get(r, ())]


def check_http_routes(
    service: ServiceProcess, target: str, model: str, headers_for: HeadersFor
) -> int:
    """Assert the matrix on every route and method; returns the number of calls checked."""
    calls = 0
    with httpx.Client(base_url=service.url, timeout=60, follow_redirects=False) as client:
        for route in service_routes(target):
            for method in route.methods:
                path = concrete_path(route.path, model)
                calls += _check_route(client, route, method, path, headers_for)
    return calls


def _check_route(
    client: httpx.Client, route: HttpRoute, method: str, path: str, headers_for: HeadersFor
) -> int:
    where = f"{method} {route.path}"
    anonymous = client.request(method, path)
    if route.role is None:
        assert anonymous.status_code not in (401, 403), where
        return 1
    assert anonymous.status_code == 401, where
    assert anonymous.headers["www-authenticate"].startswith("Bearer realm="), where
    assert anonymous.json()["error"].startswith("unauthenticated"), where
    wrong = client.request(method, path, headers=headers_for(roles_lacking(route.role)))
    assert wrong.status_code == 403, where
    assert f"'{route.role.value}'" in wrong.json()["detail"], where
    right = client.request(method, path, headers=headers_for([route.role]))
    assert right.status_code not in (401, 403, 500), (where, right.status_code, right.text)
    return 3


def _stream_error(
    client: tgrpc.InferenceServerClient, model: str, tensor: Any, headers: dict[str, str]
) -> Any:
    """The first answer of a `ModelStreamInfer` stream: (result, error)."""
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(lambda result, error: answers.put((result, error)), headers=headers)
    try:
        # A refused stream ends at once; then sending raises and the callback has the error.
        with contextlib.suppress(InferenceServerException):
            client.async_stream_infer(model, [tensor])
        return answers.get(timeout=30)
    finally:
        client.stop_stream()


def check_grpc_methods(
    service: ServiceProcess, model: str, inputs: tgrpc.InferInput, headers_for: HeadersFor
) -> None:
    """Open methods answer anyone; every other needs `predict` (UNAUTHENTICATED without a token,
    PERMISSION_DENIED with every other role); the stream is refused the same way."""
    client = tgrpc.InferenceServerClient(service.grpc_target)
    assert client.is_server_live() and client.is_server_ready()
    with grpc.insecure_channel(service.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    calls: dict[str, Callable[[dict[str, str]], Any]] = {
        "ModelMetadata": lambda h: client.get_model_metadata(model, headers=h),
        "ModelReady": lambda h: client.is_model_ready(model, headers=h),
        "ServerMetadata": lambda h: client.get_server_metadata(headers=h),
        "ModelInfer": lambda h: client.infer(model, [inputs], headers=h),
    }
    lacking = headers_for(roles_lacking(Role.PREDICT))
    for name, call in calls.items():
        for headers, status in (({}, "UNAUTHENTICATED"), (lacking, "PERMISSION_DENIED")):
            try:
                call(headers)
            except InferenceServerException as exc:
                assert exc.status() == f"StatusCode.{status}", (name, exc.status())
                assert "Bearer" not in (exc.message() or ""), name
            else:
                raise AssertionError(f"{name} answered with {headers or 'no token'}")
        assert call(headers_for([Role.PREDICT])) not in (None, False), name
    for headers, status in (({}, "UNAUTHENTICATED"), (lacking, "PERMISSION_DENIED")):
        result, error = _stream_error(client, model, inputs, headers)
        assert result is None and error is not None and error.status() == f"StatusCode.{status}"
    result, error = _stream_error(client, model, inputs, headers_for([Role.PREDICT]))
    assert error is None and result is not None
    client.close()


def infer_input(name: str, array: np.ndarray, datatype: str) -> tgrpc.InferInput:
    tensor = tgrpc.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor
