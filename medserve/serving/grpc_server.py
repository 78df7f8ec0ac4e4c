"""Open Inference Protocol v2 over gRPC: `inference.GRPCInferenceService` plus gRPC health.

One `grpc.aio` server per BentoML worker, on the worker's own event loop, so a gRPC call enters
the same `InferencePipeline` (adaptive batching, validation, log, metrics) as HTTP requests with
no extra hop. All workers bind the same port with SO_REUSEPORT; the kernel spreads connections
(not calls) across them, which is why clients should open several channels (README).
Stubs and messages are the official ones shipped in `tritonclient`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tritonclient.grpc import service_pb2, service_pb2_grpc

from medserve.logs import get_logger
from medserve.serving.errors import ServiceError
from medserve.serving.requests import valid_request_id
from medserve.serving.v2 import (
    BYTES,
    NUMPY_TYPES,
    bad_tensor,
    datatype_of,
    tensor_from_raw,
    tensor_to_raw,
)

if TYPE_CHECKING:
    from medserve.serving.gateway import Gateway
    from medserve.settings import Settings

log = get_logger("grpc")
GRPC = "grpc"
SERVICE_NAME = "inference.GRPCInferenceService"

STATUS_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}

# Which `InferTensorContents` field carries each datatype.
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    BYTES: "bytes_contents",
}


def tensor_from_contents(tensor: Any) -> np.ndarray:
    """A typed-contents input tensor -> array (count and datatype checked)."""
    name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        raise bad_tensor(f"input '{name}': unknown datatype {datatype!r}", name)
    values = list(getattr(tensor.contents, field))
    if any(d < 0 for d in shape) or len(values) != int(np.prod(shape)):
        raise bad_tensor(f"input '{name}': shape {shape} needs {int(np.prod(shape))} values", name)
    dtype = object if datatype == BYTES else NUMPY_TYPES[datatype]
    return np.array(values, dtype=dtype).reshape(shape)


def decode_inputs(request: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Input tensors of a ModelInferRequest, from `raw_input_contents` or typed contents."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise bad_tensor("raw_input_contents must hold one entry per input")
    tensors = {
        t.name: (
            tensor_from_raw(t.name, t.datatype, list(t.shape), raw[i])
            if raw
            else tensor_from_contents(t)
        )
        for i, t in enumerate(request.inputs)
    }
    return tensors, {t.name: t.datatype for t in request.inputs}


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The OIP v2 gRPC service over a gateway's `V2Protocol`."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.v2 = gateway.v2

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.v2.ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            self.v2.check_model(request.name, request.version or None)
        except ServiceError:
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerMetadataResponse(**self.v2.server_metadata())

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        try:
            meta = self.v2.model_metadata(request.name, request.version or None)
        except ServiceError as exc:
            await context.abort(STATUS_CODES.get(exc.status, grpc.StatusCode.INTERNAL), exc.detail)
        tensors = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensors(**t) for t in meta["inputs"]],
            outputs=[tensors(**t) for t in meta["outputs"]],
        )

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        started = time.perf_counter()
        request_id = valid_request_id(request.id)
        outcome, status, message = "ok", grpc.StatusCode.OK, ""
        try:
            tensors, datatypes = decode_inputs(request)
            requested = [o.name for o in request.outputs] or None
            outputs = await self.v2.infer(
                request.model_name,
                request.model_version or None,
                tensors,
                datatypes,
                requested,
                request_id,
                GRPC,
            )
            return self._response(request, outputs)
        except ServiceError as exc:
            outcome = exc.error
            status = STATUS_CODES.get(exc.status, grpc.StatusCode.INTERNAL)
            message = f"{exc.error}: {exc.detail}"
            self.gateway.count_reject(exc.error)
        except Exception as exc:  # the type alone is logged: messages can echo input
            outcome, status, message = "internal_error", grpc.StatusCode.INTERNAL, "internal error"
            log.error(
                "unhandled error", extra={"request_id": request_id, "error": type(exc).__name__}
            )
        finally:
            pipeline = self.gateway.pipeline
            if pipeline is not None:
                pipeline.request_timer(GRPC, outcome).observe(time.perf_counter() - started)
        await context.abort(status, message)

    def _response(self, request: Any, outputs: Mapping[str, np.ndarray]) -> Any:
        model = self.gateway.ready_pipeline.model
        response = service_pb2.ModelInferResponse(
            model_name=model.name,
            model_version=model.tag.split(":", 1)[1],
            id=request.id,
        )
        response.parameters["model_tag"].string_param = model.tag
        for name, array in outputs.items():
            out = response.outputs.add()
            out.name, out.datatype = name, datatype_of(array)
            out.shape.extend(array.shape)
            response.raw_output_contents.append(tensor_to_raw(array))
        return response


async def start_grpc_server(gateway: Gateway, settings: Settings) -> grpc.aio.Server:
    """Start the worker's gRPC server (inference + health) on the configured port."""
    options = [
        ("grpc.so_reuseport", 1),
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
    ]
    server = grpc.aio.server(options=options)
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(gateway), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # Reflection lets grpcurl and other generic tools call the service without .proto files.
    reflection.enable_server_reflection(
        (
            service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"gRPC could not bind {address}")
    await server.start()
    serving = health_pb2.HealthCheckResponse.SERVING
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, serving)
    log.info("grpc serving", extra={"address": address})
    return server
