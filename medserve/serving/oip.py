"""Open Inference Protocol v2 semantics over the data plane, with no transport in them.

Model lookup, the metadata documents, and inference: decoded input tensors are checked against
the model's declared inputs, turned into model rows (vectorised when every value is valid, per
instance otherwise, so an error names its row and field) and answered as the output tensors the
model declares. The REST (`oip_rest.py`) and gRPC (`oip_grpc.py`) adapters only translate wires.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medserve.serving.dataplane import DataPlane
from medserve.serving.errors import ServiceError
from medserve.serving.model import ModelInputs
from medserve.serving.tensors import TensorSpec, bad_tensor, element_count

SERVER_NAME = "medserve"
SERVER_VERSION = "2"
EXTENSIONS = ("binary_tensor_data",)
# Names, ids, shapes, parameters and protobuf framing around the tensor values of a request.
REQUEST_OVERHEAD_BYTES = 64 * 1024


TensorHeader = tuple[str, str, Sequence[int]]  # name, datatype, shape


@dataclass(frozen=True, slots=True)
class InferCall:
    """An infer request off the wire: which model, the headers of its inputs, how to decode
    their values (called only once the headers passed) and the outputs it wants."""

    model_name: str
    model_version: str | None
    headers: Sequence[TensorHeader]
    decode: Callable[[], Mapping[str, np.ndarray]]
    requested: Sequence[str] | None
    request_id: str


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": list(EXTENSIONS)}


def check_model(plane: DataPlane, name: str, version: str | None) -> None:
    """404 unless `name` (and `version`, if given) is the model this service runs."""
    model = plane.model
    if name != model.name or (version and version != model.version):
        wanted = f"{name}" + (f" version {version}" if version else "")
        raise ServiceError(404, "model_not_found", f"model {wanted} is not served here")


def model_metadata(plane: DataPlane, name: str, version: str | None) -> dict[str, Any]:
    check_model(plane, name, version)
    model = plane.model
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": SERVER_NAME,
        "inputs": [spec.metadata() for spec in model.v2_inputs],
        "outputs": [spec.metadata() for spec in model.v2_outputs],
    }


async def infer(plane: DataPlane, call: InferCall, api: str) -> dict[str, np.ndarray]:
    """Output tensors (in declaration order, or as requested) for one infer request."""
    check_model(plane, call.model_name, call.model_version)
    declared = [spec.name for spec in plane.model.v2_outputs]
    unknown = sorted(set(call.requested or ()) - set(declared))
    if unknown:
        raise bad_tensor(f"unknown output(s) {unknown}; available {declared}", unknown[0])
    check_headers(plane, call.headers)
    inputs = await model_inputs(plane, call.decode())
    answered = await plane.infer(inputs, call.request_id, api)
    wanted = set(call.requested or declared)
    return {
        spec.name: spec.column_tensor(answered.columns)
        for spec in plane.model.v2_outputs
        if spec.name in wanted
    }


def check_headers(plane: DataPlane, headers: Sequence[TensorHeader]) -> None:
    """Every input's (name, datatype, shape) against the model's declared inputs, before any
    value is converted: a large message of the wrong shape costs nothing but this check."""
    specs = {spec.name: spec for spec in plane.model.v2_inputs}
    names = [name for name, _, _ in headers]
    unknown = sorted(set(names) - set(specs))
    if unknown:
        raise bad_tensor(f"unknown input(s) {unknown}; expected {sorted(specs)}", unknown[0])
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise bad_tensor(f"input(s) {duplicated} given more than once", duplicated[0])
    missing = sorted(set(specs) - set(names))
    if missing:
        raise bad_tensor(f"missing input '{missing[0]}'", missing[0])
    for name, datatype, shape in headers:
        spec = specs[name]
        if not spec.accepts(datatype):
            allowed = spec.accepted_datatypes or [spec.datatype]
            raise bad_tensor(f"input '{name}': datatype must be one of {allowed}", name)
        element_count(name, shape)  # non-negative integers
        if not spec.fits(shape):
            raise bad_tensor(f"input '{name}': shape {list(shape)} does not fit {spec.shape}")
    plane.admit(max(shape[0] for _, _, shape in headers))


async def model_inputs(plane: DataPlane, tensors: Mapping[str, np.ndarray]) -> ModelInputs:
    """Input tensors (their headers already checked) -> model rows: the model's vectorised check
    first, per-instance validation (which names the offending row and field) when it does not
    vouch for them."""
    model = plane.model
    trusted = model.trusted_inputs(tensors)
    if trusted is not None:
        return trusted
    raw = model.instances_from_tensors(tensors)
    instances = await plane.validate_instances(raw, prefix=model.v2_inputs[0].name)
    return await plane.preprocess(instances)


def largest_request_bytes(inputs: Sequence[TensorSpec], max_instances: int) -> int | None:
    """The wire size of the largest legal infer request, what the gRPC receive limit is sized
    from (None when an input has no bound, e.g. BYTES: its elements have no size of their own)."""
    per_row = [spec.max_row_bytes() for spec in inputs]
    if any(size is None for size in per_row):
        return None
    return REQUEST_OVERHEAD_BYTES + max_instances * sum(size for size in per_row if size)
