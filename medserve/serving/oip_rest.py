"""Open Inference Protocol v2 over HTTP: the REST routes, JSON and binary tensor extension.

A thin adapter: it decodes the wire into an `oip.InferCall` and encodes the output tensors;
protocol semantics live in `oip.py`. Errors use the shared shape with `error` =
"<code>: <message>" (the protocol's field for the message).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from medserve.auth.roles import Role
from medserve.serving import oip, oip_schema
from medserve.serving.contract import Body, ModelPart, RouteDoc
from medserve.serving.dataplane import DataPlane, valid_request_id
from medserve.serving.errors import ServiceError
from medserve.serving.http_api import HttpRoute, read_body
from medserve.serving.tensors import (
    datatype_of,
    tensor_from_json,
    tensor_from_raw,
    tensor_to_json,
    tensor_to_raw,
)

API = "v2_rest"
BINARY_HEADER = "inference-header-content-length"


class RequestTensor(BaseModel):
    """One input tensor of a REST infer request."""

    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: Any = None


class RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    """A REST infer request body (the JSON part, when the binary extension is used)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestTensor] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


async def _server_metadata(request: Request, plane: DataPlane | None, request_id: str) -> Response:
    return JSONResponse(oip.server_metadata())


async def _live(request: Request, plane: DataPlane | None, request_id: str) -> Response:
    return JSONResponse({"live": True})


async def _ready(request: Request, plane: DataPlane | None, request_id: str) -> Response:
    ready = plane is not None
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


async def _model_ready(request: Request, plane: DataPlane, request_id: str) -> Response:
    name = request.path_params["model"]
    oip.check_model(plane, name, request.path_params.get("version"))
    return JSONResponse({"name": name, "ready": True})


async def _model_metadata(request: Request, plane: DataPlane, request_id: str) -> Response:
    params = request.path_params
    return JSONResponse(oip.model_metadata(plane, params["model"], params.get("version")))


async def _infer(request: Request, plane: DataPlane, request_id: str) -> Response:
    """`POST .../infer`: JSON tensors, or the binary tensor extension, in and out."""
    body = await read_body(request, plane.settings.max_body_bytes)
    json_part, binary = _split_binary(body, request.headers.get(BINARY_HEADER))
    infer = _parse(json_part)
    call = oip.InferCall(
        model_name=request.path_params["model"],
        model_version=request.path_params.get("version"),
        headers=[(t.name, t.datatype, t.shape) for t in infer.inputs],
        decode=lambda: _decode_inputs(infer, binary),
        requested=[o.name for o in infer.outputs] if infer.outputs else None,
        request_id=valid_request_id(infer.id) if infer.id else request_id,
    )
    outputs = await oip.infer(plane, call, API)
    return _infer_response(plane, infer, outputs)


def _parse(json_part: bytes) -> InferRequest:
    try:
        return InferRequest.model_validate_json(json_part)
    except ValidationError as exc:
        if "json_invalid" in {err["type"] for err in exc.errors()}:
            raise ServiceError(400, "malformed_json", "the body is not valid JSON") from None
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ServiceError(
            400, "invalid_request", f"{where}: {first['msg']}", field=where
        ) from None


def _split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise ServiceError(400, "invalid_request", f"bad {BINARY_HEADER} header")
    return body[: int(header_length)], body[int(header_length) :]


def _decode_inputs(infer: InferRequest, binary: bytes) -> dict[str, np.ndarray]:
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in infer.inputs:
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise ServiceError(400, "invalid_tensor", f"input '{tensor.name}': bad binary size")
            chunk = binary[offset : offset + size]
            offset += size
            tensors[tensor.name] = tensor_from_raw(
                tensor.name, tensor.datatype, tensor.shape, chunk
            )
        else:
            tensors[tensor.name] = tensor_from_json(
                tensor.name, tensor.datatype, tensor.shape, tensor.data
            )
    if offset != len(binary):
        raise ServiceError(400, "invalid_tensor", "binary data left over after the inputs")
    return tensors


def _infer_response(
    plane: DataPlane, infer: InferRequest, outputs: dict[str, np.ndarray]
) -> Response:
    model = plane.model
    binary_all = bool((infer.parameters or {}).get("binary_data_output", False))
    wants_binary = {
        o.name: bool((o.parameters or {}).get("binary_data", binary_all))
        for o in (infer.outputs or [])
    }
    described, blobs = [], []
    for name, array in outputs.items():
        entry: dict[str, Any] = {
            "name": name,
            "datatype": datatype_of(array),
            "shape": list(array.shape),
        }
        if wants_binary.get(name, binary_all):
            raw = tensor_to_raw(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = tensor_to_json(array)
        described.append(entry)
    header = json.dumps(
        {
            "model_name": model.name,
            "model_version": model.version,
            "id": infer.id or "",
            "parameters": {"model_tag": model.tag},
            "outputs": described,
        }
    ).encode()
    if not blobs:
        return Response(header, media_type="application/json")
    return Response(
        header + b"".join(blobs),
        media_type="application/octet-stream",
        headers={BINARY_HEADER: str(len(header))},
    )


_MODEL = "/v2/models/{model}"
_VERSIONED = "/v2/models/{model}/versions/{version}"
_OIP = "oip v2"
# The model (and version) in the path must be the served one: anything else is a 404.
_PATH = {"model": ModelPart.MODEL_NAME, "version": ModelPart.MODEL_VERSION}
_BINARY = "application/octet-stream"
_INFER_DOC = RouteDoc(
    "Open Inference Protocol v2 inference",
    "JSON tensors, or the binary tensor extension: the JSON header of "
    f"`{BINARY_HEADER}` bytes followed by the raw tensors (`application/octet-stream`).",
    path=_PATH,
    body=Body(InferRequest, ("application/json", _BINARY)),
    answers={
        "200": Body(
            oip_schema.InferResponse,
            ("application/json", _BINARY),
            headers={BINARY_HEADER: "Length of the JSON header (binary answers only)."},
        )
    },
    tag=_OIP,
)
OIP_REST_ROUTES = (
    HttpRoute(
        "/v2",
        _server_metadata,
        "read",
        Role.PREDICT,
        oip=True,
        doc=RouteDoc("Server metadata", answers={"200": Body(oip_schema.ServerMetadata)}, tag=_OIP),
    ),
    HttpRoute(
        "/v2/health/live",
        _live,
        "read",
        None,
        oip=True,
        probe=True,
        doc=RouteDoc("Liveness", answers={"200": Body(oip_schema.Live)}, tag="probes"),
    ),
    HttpRoute(
        "/v2/health/ready",
        _ready,
        "read",
        None,
        oip=True,
        probe=True,
        doc=RouteDoc(
            "Readiness (the model is loaded)",
            answers={"200": Body(oip_schema.Ready), "503": Body(oip_schema.Ready)},
            tag="probes",
        ),
    ),
    *(
        HttpRoute(
            base,
            _model_metadata,
            "read",
            Role.PREDICT,
            oip=True,
            doc=RouteDoc(
                "Model metadata: input and output tensors",
                path=_PATH,
                answers={"200": Body(oip_schema.ModelMetadata)},
                tag=_OIP,
            ),
        )
        for base in (_MODEL, _VERSIONED)
    ),
    *(
        HttpRoute(
            f"{base}/ready",
            _model_ready,
            "read",
            Role.PREDICT,
            oip=True,
            doc=RouteDoc(
                "Model readiness",
                path=_PATH,
                answers={"200": Body(oip_schema.ModelReady)},
                tag=_OIP,
            ),
        )
        for base in (_MODEL, _VERSIONED)
    ),
    *(
        HttpRoute(f"{base}/infer", _infer, API, Role.PREDICT, ("POST",), oip=True, doc=_INFER_DOC)
        for base in (_MODEL, _VERSIONED)
    ),
)
