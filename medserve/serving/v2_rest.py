"""Open Inference Protocol v2 over HTTP: the REST routes, JSON and binary tensor extension.

Errors use the shared error shape with `error` = "<code>: <message>" (the protocol's field for
the message). Protocol semantics live in `v2.V2Protocol`, shared with the gRPC servicer.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from medserve.serving.errors import ServiceError
from medserve.serving.requests import read_body, valid_request_id
from medserve.serving.v2 import (
    InferRequest,
    datatype_of,
    tensor_from_json,
    tensor_from_raw,
    tensor_to_json,
    tensor_to_raw,
)

if TYPE_CHECKING:
    from medserve.serving.gateway import Gateway

V2_REST = "v2_rest"
BINARY_HEADER = "inference-header-content-length"


def v2_routes(gateway: Gateway) -> list[BaseRoute]:
    """The v2 REST routes of a gateway."""
    read = gateway.wrap(_v2_read, "read", oip=True)
    infer = gateway.wrap(_v2_infer, V2_REST, oip=True)
    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    return [
        Route("/v2", read),
        Route("/v2/health/live", read),
        Route("/v2/health/ready", read),
        *(Route(base, read) for base in (model, versioned)),
        *(Route(f"{base}/ready", read) for base in (model, versioned)),
        *(Route(f"{base}/infer", infer, methods=["POST"]) for base in (model, versioned)),
    ]


async def _v2_read(request: Request, gateway: Gateway, request_id: str) -> Response:
    """Server/model metadata, liveness and readiness."""
    path = request.url.path.rstrip("/")
    v2 = gateway.v2
    if path == "/v2":
        return JSONResponse(v2.server_metadata())
    if path == "/v2/health/live":
        return JSONResponse({"live": True})
    if path == "/v2/health/ready":
        return JSONResponse({"ready": v2.ready}, status_code=200 if v2.ready else 503)
    name = request.path_params["model"]
    version = request.path_params.get("version")
    if path.endswith("/ready"):
        v2.check_model(name, version)
        return JSONResponse({"name": name, "ready": True})
    return JSONResponse(v2.model_metadata(name, version))


async def _v2_infer(request: Request, gateway: Gateway, request_id: str) -> Response:
    """`POST .../infer`: JSON tensors, or the binary tensor extension, in and out."""
    body = await read_body(request, gateway.ready_pipeline.settings.max_body_bytes)
    header_length = request.headers.get(BINARY_HEADER)
    json_part, binary = _split_binary(body, header_length)
    try:
        infer = InferRequest.model_validate_json(json_part)
    except ValidationError as exc:
        kinds = {err["type"] for err in exc.errors()}
        if "json_invalid" in kinds:
            raise ServiceError(400, "malformed_json", "the body is not valid JSON") from None
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ServiceError(
            400, "invalid_request", f"{where}: {first['msg']}", field=where
        ) from None
    tensors, datatypes = _decode_inputs(infer, binary)
    requested = [o.name for o in infer.outputs] if infer.outputs else None
    outputs = await gateway.v2.infer(
        request.path_params["model"],
        request.path_params.get("version"),
        tensors,
        datatypes,
        requested,
        valid_request_id(infer.id) if infer.id else request_id,
        V2_REST,
    )
    return _infer_response(gateway, infer, outputs)


def _split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise ServiceError(400, "invalid_request", f"bad {BINARY_HEADER} header")
    return body[: int(header_length)], body[int(header_length) :]


def _decode_inputs(
    infer: InferRequest, binary: bytes
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
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
    return tensors, {t.name: t.datatype for t in infer.inputs}


def _infer_response(
    gateway: Gateway, infer: InferRequest, outputs: dict[str, np.ndarray]
) -> Response:
    model = gateway.ready_pipeline.model
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
            "model_version": model.tag.split(":", 1)[1],
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
