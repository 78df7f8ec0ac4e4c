"""Open Inference Protocol v2 over gRPC: `inference.GRPCInferenceService` plus gRPC health.

A thin adapter over `oip.py`: unary `ModelInfer` and Triton's bidirectional `ModelStreamInfer`
(what `tritonclient.grpc`'s `start_stream` / `async_stream_infer` use). One `grpc.aio` server per
BentoML worker, on the worker's own event loop, so calls enter the same data plane (batching,
validation, log, metrics) as HTTP with no extra hop. All workers bind the same port with
SO_REUSEPORT; the kernel spreads connections (not calls) across them (README).
Stubs and messages are the official ones shipped in `tritonclient`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tritonclient.grpc import service_pb2, service_pb2_grpc

from medserve.auth.authenticator import Authenticator
from medserve.logs import get_logger
from medserve.serving import oip
from medserve.serving.dataplane import DataPlane, valid_request_id
from medserve.serving.errors import ServiceError
from medserve.serving.grpc_auth import AuthInterceptor
from medserve.serving.model import ServedModel
from medserve.serving.tensors import (
    BYTES,
    NUMPY_TYPES,
    bad_tensor,
    datatype_of,
    element_count,
    tensor_from_raw,
    tensor_to_raw,
)
from medserve.settings import Settings

log = get_logger("grpc")
API_UNARY = "grpc"
API_STREAM = "grpc_stream"
SERVICE_NAME = "inference.GRPCInferenceService"
INFER_METHOD = f"/{SERVICE_NAME}/ModelInfer"
STREAM_METHOD = f"/{SERVICE_NAME}/ModelStreamInfer"

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


def status_of(error: ServiceError) -> grpc.StatusCode:
    return STATUS_CODES.get(error.status, grpc.StatusCode.INTERNAL)


def tensor_from_contents(tensor: Any) -> np.ndarray:
    """A typed-contents input tensor -> array (count and datatype checked)."""
    name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        raise bad_tensor(f"input '{name}': unknown datatype {datatype!r}", name)
    values = getattr(tensor.contents, field)
    count = element_count(name, shape)
    if len(values) != count:
        raise bad_tensor(f"input '{name}': shape {shape} needs {count} values", name)
    dtype = object if datatype == BYTES else NUMPY_TYPES[datatype]
    return np.array(values, dtype=dtype).reshape(shape)


def decode_call(request: Any) -> oip.InferCall:
    """A ModelInferRequest -> the protocol call (`raw_input_contents` or typed contents); the
    values are converted only after the data plane has checked the headers."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise bad_tensor("raw_input_contents must hold one entry per input")

    def decode() -> dict[str, np.ndarray]:
        return {
            t.name: (
                tensor_from_raw(t.name, t.datatype, t.shape, raw[i])
                if raw
                else tensor_from_contents(t)
            )
            for i, t in enumerate(request.inputs)
        }

    return oip.InferCall(
        model_name=request.model_name,
        model_version=request.model_version or None,
        headers=[(t.name, t.datatype, list(t.shape)) for t in request.inputs],
        decode=decode,
        requested=[o.name for o in request.outputs] or None,
        request_id=valid_request_id(request.id),
    )


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The OIP v2 gRPC service over one worker's data plane."""

    def __init__(self, plane: DataPlane, settings: Settings) -> None:
        self.plane = plane
        self.stream_in_flight = settings.grpc_stream_max_in_flight

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            oip.check_model(self.plane, request.name, request.version or None)
        except ServiceError:
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerMetadataResponse(**oip.server_metadata())

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        try:
            meta = oip.model_metadata(self.plane, request.name, request.version or None)
        except ServiceError as exc:
            await context.abort(status_of(exc), exc.detail)
        tensors = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensors(**t) for t in meta["inputs"]],
            outputs=[tensors(**t) for t in meta["outputs"]],
        )

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        request_id = valid_request_id(request.id)
        result = await self.plane.handle(
            API_UNARY, request_id, INFER_METHOD, lambda: self._infer(request, API_UNARY)
        )
        if isinstance(result, ServiceError):
            await context.abort(status_of(result), f"{result.error}: {result.detail}")
        return result

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        """Answer each request of the stream as soon as it is done (responses carry the
        request's `id`; order follows completion). Up to `grpc_stream_max_in_flight` requests
        of one stream are in the data plane at once, so a stream's requests batch together;
        beyond that the stream is not read (HTTP/2 flow control pushes back on the client)."""
        responses: asyncio.Queue[Any] = asyncio.Queue()
        reader = asyncio.create_task(self._read_stream(request_iterator, responses))
        try:
            while (response := await responses.get()) is not None:
                yield response
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read_stream(
        self, requests: AsyncIterator[Any], responses: asyncio.Queue[Any]
    ) -> None:
        slots = asyncio.Semaphore(self.stream_in_flight)
        pending: set[asyncio.Task[None]] = set()

        async def answer(request: Any) -> None:
            try:
                responses.put_nowait(await self._stream_response(request))
            finally:
                slots.release()

        try:
            async for request in requests:
                await slots.acquire()
                task = asyncio.create_task(answer(request))
                pending.add(task)
                task.add_done_callback(pending.discard)
            while pending:
                await asyncio.wait(set(pending))
        finally:
            for task in pending:
                task.cancel()
            responses.put_nowait(None)

    async def _stream_response(self, request: Any) -> Any:
        request_id = valid_request_id(request.id)
        result = await self.plane.handle(
            API_STREAM, request_id, STREAM_METHOD, lambda: self._infer(request, API_STREAM)
        )
        if isinstance(result, ServiceError):
            failed = service_pb2.ModelInferResponse(
                model_name=request.model_name, model_version=request.model_version, id=request.id
            )
            return service_pb2.ModelStreamInferResponse(
                error_message=f"{result.error}: {result.detail}", infer_response=failed
            )
        return service_pb2.ModelStreamInferResponse(infer_response=result)

    async def _infer(self, request: Any, api: str) -> Any:
        outputs = await oip.infer(self.plane, decode_call(request), api)
        return self._response(request, outputs)

    def _response(self, request: Any, outputs: Mapping[str, np.ndarray]) -> Any:
        model = self.plane.model
        response = service_pb2.ModelInferResponse(
            model_name=model.name, model_version=model.version, id=request.id
        )
        response.parameters["model_tag"].string_param = model.tag
        for name, array in outputs.items():
            out = response.outputs.add()
            out.name, out.datatype = name, datatype_of(array)
            out.shape.extend(array.shape)
            response.raw_output_contents.append(tensor_to_raw(array))
        return response


def receive_limit(model: ServedModel, settings: Settings) -> int:
    """The largest message this model's server reads: its largest legal infer request, capped by
    `grpc_max_message_bytes`. gRPC refuses a bigger one (RESOURCE_EXHAUSTED) before it is
    parsed, so an oversized message costs no memory."""
    largest = oip.largest_request_bytes(model.v2_inputs, settings.max_instances_per_request)
    cap = settings.grpc_max_message_bytes
    return cap if largest is None else min(cap, largest)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials of the gRPC port from `MEDSERVE_GRPC_TLS_*`; None = plaintext.

    With a client CA, clients must present a certificate it signed (mutual TLS); the handshake
    fails otherwise, before any call. The files are read once, when the worker starts: a rotated
    certificate (cert-manager renews the Secret) is served after the pods restart.
    """
    if settings.grpc_tls_cert_file is None or settings.grpc_tls_key_file is None:
        return None
    ca_file = settings.grpc_tls_client_ca_file
    return grpc.ssl_server_credentials(
        [(settings.grpc_tls_key_file.read_bytes(), settings.grpc_tls_cert_file.read_bytes())],
        root_certificates=ca_file.read_bytes() if ca_file is not None else None,
        require_client_auth=ca_file is not None,
    )


async def start_grpc_server(
    plane: DataPlane, settings: Settings, authenticator: Authenticator
) -> grpc.aio.Server:
    """Start the worker's gRPC server (inference + health) on the configured port, behind the
    access checks."""
    options = [
        ("grpc.so_reuseport", 1),
        ("grpc.max_receive_message_length", receive_limit(plane.model, settings)),
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
    ]
    server = grpc.aio.server(options=options, interceptors=[AuthInterceptor(authenticator, plane)])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(plane, settings), server
    )
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
    credentials = server_credentials(settings)
    if credentials is None:
        transport, bound = "plaintext", server.add_insecure_port(address)
    else:
        transport = "mtls" if settings.grpc_tls_client_ca_file is not None else "tls"
        bound = server.add_secure_port(address, credentials)
    if bound == 0:
        raise RuntimeError(f"gRPC could not bind {address}")
    await server.start()
    serving = health_pb2.HealthCheckResponse.SERVING
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, serving)
    log.info("grpc serving", extra={"address": address, "transport": transport})
    return server
