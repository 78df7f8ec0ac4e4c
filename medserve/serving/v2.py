"""Open Inference Protocol v2 (KServe / Triton), transport-independent.

Tensor codecs (JSON `data`, raw little-endian bytes), the metadata documents, and `V2Protocol`,
which turns decoded input tensors into the model's validated instances, runs them through the
gateway's shared inference path (same batching, validation, log and metrics as `/predict`) and
returns output tensors. The REST routes (`gateway.py`) and the gRPC servicer (`grpc_server.py`)
are thin adapters over it.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from medserve.serving.errors import ServiceError, field_errors

if TYPE_CHECKING:
    from medserve.serving.gateway import Gateway

SERVER_NAME = "medserve"
SERVER_VERSION = "2"

# OIP v2 datatype -> NumPy dtype (little-endian on the wire). BYTES is handled apart.
NUMPY_TYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
BYTES = "BYTES"


class TensorSpec(BaseModel):
    """An input or output tensor a model declares (`-1` = any size in that dimension)."""

    name: str
    datatype: str
    shape: list[int]
    accepted_datatypes: list[str] = Field(default_factory=list, exclude=True)

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


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


def bad_tensor(detail: str, field: str | None = None) -> ServiceError:
    """A 400 per the protocol: the request's tensors are malformed or invalid."""
    return ServiceError(400, "invalid_tensor", detail, field=field)


def _element_count(name: str, shape: Sequence[int]) -> int:
    if any((not isinstance(d, int)) or d < 0 for d in shape):
        raise bad_tensor(f"input '{name}': shape must be non-negative integers", name)
    return math.prod(shape)


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [item for element in data for item in _flatten(element)]
    return [data]


def tensor_from_json(name: str, datatype: str, shape: Sequence[int], data: Any) -> np.ndarray:
    """A JSON `data` field (flat or nested, row-major) -> a NumPy array of `shape`."""
    count = _element_count(name, shape)
    if datatype == BYTES:
        values = _flatten(data)
        if len(values) != count or not all(isinstance(v, str) for v in values):
            raise bad_tensor(f"input '{name}': expected {count} strings", name)
        return np.array([v.encode() for v in values], dtype=object).reshape(shape)
    dtype = NUMPY_TYPES.get(datatype)
    if dtype is None:
        raise bad_tensor(f"input '{name}': unknown datatype {datatype!r}", name)
    values = _flatten(data)
    if len(values) != count:
        raise bad_tensor(f"input '{name}': shape {list(shape)} needs {count} values", name)
    expected: type | tuple[type, ...] = (
        bool if datatype == "BOOL" else int if dtype.kind in "iu" else (int, float)
    )
    if not all(
        isinstance(v, expected) and (datatype == "BOOL") == isinstance(v, bool) for v in values
    ):
        raise bad_tensor(f"input '{name}': values do not match datatype {datatype}", name)
    try:
        return np.asarray(values, dtype=dtype).reshape(shape)
    except (TypeError, ValueError, OverflowError):
        raise bad_tensor(f"input '{name}': values do not fit datatype {datatype}", name) from None


def tensor_from_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> np.ndarray:
    """Raw little-endian bytes (gRPC `raw_input_contents`, HTTP binary extension) -> array."""
    count = _element_count(name, shape)
    if datatype == BYTES:
        items, offset = [], 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise bad_tensor(f"input '{name}': truncated BYTES element", name)
            (size,) = struct.unpack_from("<I", raw, offset)
            items.append(raw[offset + 4 : offset + 4 + size])
            offset += 4 + size
        if len(items) != count or offset != len(raw):
            raise bad_tensor(f"input '{name}': expected {count} BYTES elements", name)
        return np.array(items, dtype=object).reshape(shape)
    dtype = NUMPY_TYPES.get(datatype)
    if dtype is None:
        raise bad_tensor(f"input '{name}': unknown datatype {datatype!r}", name)
    if len(raw) != count * dtype.itemsize:
        raise bad_tensor(f"input '{name}': {len(raw)} bytes do not hold {count} x {datatype}", name)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def datatype_of(array: np.ndarray) -> str:
    """The protocol datatype of an output array."""
    if array.dtype == object:
        return BYTES
    for name, dtype in NUMPY_TYPES.items():
        if array.dtype == dtype.newbyteorder("="):
            return name
    raise TypeError(f"no OIP datatype for {array.dtype}")


def tensor_to_raw(array: np.ndarray) -> bytes:
    """An output array -> raw little-endian bytes (BYTES: 4-byte length prefixes)."""
    if array.dtype == object:
        return b"".join(struct.pack("<I", len(v)) + v for v in array.ravel().tolist())
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def tensor_to_json(array: np.ndarray) -> list[Any]:
    """An output array -> the flat JSON `data` list."""
    if array.dtype == object:
        return [v.decode() for v in array.ravel().tolist()]
    return array.ravel().tolist()


class V2Protocol:
    """OIP v2 semantics over a gateway: model lookup, metadata, and inference."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    # -- metadata ------------------------------------------------------------------------------
    @staticmethod
    def server_metadata() -> dict[str, Any]:
        return {
            "name": SERVER_NAME,
            "version": SERVER_VERSION,
            "extensions": ["binary_tensor_data"],
        }

    @property
    def ready(self) -> bool:
        return self.gateway.pipeline is not None

    def check_model(self, name: str, version: str | None) -> None:
        """404 unless `name` (and `version`, if given) is the model this service runs."""
        model = self.gateway.ready_pipeline.model
        served_version = model.tag.split(":", 1)[1]
        if name != model.name or (version and version != served_version):
            wanted = f"{name}" + (f" version {version}" if version else "")
            raise ServiceError(404, "model_not_found", f"model {wanted} is not served here")

    def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        self.check_model(name, version)
        model = self.gateway.ready_pipeline.model
        return {
            "name": model.name,
            "versions": [model.tag.split(":", 1)[1]],
            "platform": SERVER_NAME,
            "inputs": [spec.metadata() for spec in model.v2_inputs],
            "outputs": [spec.metadata() for spec in model.v2_outputs],
        }

    # -- inference -----------------------------------------------------------------------------
    def _check_inputs(
        self, tensors: Mapping[str, np.ndarray], datatypes: Mapping[str, str]
    ) -> None:
        specs = {spec.name: spec for spec in self.gateway.ready_pipeline.model.v2_inputs}
        unknown = sorted(set(tensors) - set(specs))
        if unknown:
            raise bad_tensor(f"unknown input(s) {unknown}; expected {sorted(specs)}", unknown[0])
        for name, spec in specs.items():
            if name not in tensors:
                raise bad_tensor(f"missing input '{name}'", name)
            allowed = spec.accepted_datatypes or [spec.datatype]
            if datatypes[name] not in allowed:
                raise bad_tensor(f"input '{name}': datatype must be one of {allowed}", name)
            shape = tensors[name].shape
            fits = len(shape) == len(spec.shape) and all(
                want in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
            )
            if not fits or shape[0] == 0:
                raise bad_tensor(f"input '{name}': shape {list(shape)} does not fit {spec.shape}")

    def _instances(self, tensors: Mapping[str, np.ndarray]) -> list[BaseModel]:
        model = self.gateway.ready_pipeline.model
        limit = self.gateway.ready_pipeline.settings.max_instances_per_request
        # Checked on the shapes, before any row is converted: a 64 MiB gRPC message holds
        # hundreds of thousands of rows.
        if max(len(tensor) for tensor in tensors.values()) > limit:
            raise ServiceError(413, "batch_too_large", f"at most {limit} instances per request")
        raw = model.instances_from_tensors(tensors)
        try:
            return _adapter(model.instance_schema).validate_python(raw)
        except ValidationError as exc:
            errors = field_errors(exc, model.allowed, prefix=model.v2_inputs[0].name)
            first = errors[0]
            raise ServiceError(
                400,
                "invalid_tensor",
                f"{len(errors)} invalid value(s); first: {first.field}: {first.message}",
                field=first.field,
                errors=errors,
            ) from None

    async def infer(
        self,
        name: str,
        version: str | None,
        tensors: Mapping[str, np.ndarray],
        datatypes: Mapping[str, str],
        requested: Sequence[str] | None,
        request_id: str,
        transport: str,
    ) -> dict[str, np.ndarray]:
        """Output tensors (in declaration order, or as requested) for decoded input tensors."""
        self.check_model(name, version)
        self._check_inputs(tensors, datatypes)
        model = self.gateway.ready_pipeline.model
        declared = [spec.name for spec in model.v2_outputs]
        unknown = sorted(set(requested or ()) - set(declared))
        if unknown:
            raise bad_tensor(f"unknown output(s) {unknown}; available {declared}", unknown[0])
        answers = await self.gateway.predict_instances(
            self._instances(tensors), request_id, transport
        )
        outputs = model.tensors_from_answers(answers)
        return {name: outputs[name] for name in (requested or declared)}


_ADAPTERS: dict[type[BaseModel], TypeAdapter[list[Any]]] = {}


def _adapter(schema: type[BaseModel]) -> TypeAdapter[list[Any]]:
    if schema not in _ADAPTERS:
        _ADAPTERS[schema] = TypeAdapter(list[schema])  # type: ignore[valid-type]
    return _ADAPTERS[schema]
