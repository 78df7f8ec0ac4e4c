"""Open Inference Protocol v2 semantics over the data plane, with no transport in them.

Model lookup, the metadata documents, and inference: decoded input tensors are checked against
the model's declared inputs, turned into model rows (vectorised when every value is valid, per
instance otherwise, so an error names its row and field) and answered as the output tensors the
model declares. The REST (`oip_rest.py`) and gRPC (`oip_grpc.py`) adapters only translate wires.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medserve.serving.dataplane import DataPlane
from medserve.serving.errors import ServiceError
from medserve.serving.model import ModelInputs
from medserve.serving.tensors import bad_tensor

SERVER_NAME = "medserve"
SERVER_VERSION = "2"
EXTENSIONS = ("binary_tensor_data",)


@dataclass(frozen=True, slots=True)
class InferCall:
    """A decoded infer request: which model, its input tensors and the outputs it wants."""

    model_name: str
    model_version: str | None
    tensors: Mapping[str, np.ndarray]
    datatypes: Mapping[str, str]
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
    inputs = await model_inputs(plane, call.tensors, call.datatypes)
    answered = await plane.infer(inputs, call.request_id, api)
    wanted = set(call.requested or declared)
    return {
        spec.name: spec.column_tensor(answered.columns)
        for spec in plane.model.v2_outputs
        if spec.name in wanted
    }


async def model_inputs(
    plane: DataPlane, tensors: Mapping[str, np.ndarray], datatypes: Mapping[str, str]
) -> ModelInputs:
    """Checked input tensors -> model rows: the model's vectorised check first, per-instance
    validation (which names the offending row and field) when it does not vouch for them."""
    model = plane.model
    specs = {spec.name: spec for spec in model.v2_inputs}
    unknown = sorted(set(tensors) - set(specs))
    if unknown:
        raise bad_tensor(f"unknown input(s) {unknown}; expected {sorted(specs)}", unknown[0])
    for name, spec in specs.items():
        if name not in tensors:
            raise bad_tensor(f"missing input '{name}'", name)
        if not spec.accepts(datatypes[name]):
            allowed = spec.accepted_datatypes or [spec.datatype]
            raise bad_tensor(f"input '{name}': datatype must be one of {allowed}", name)
        shape = tensors[name].shape
        if not spec.fits(shape):
            raise bad_tensor(f"input '{name}': shape {list(shape)} does not fit {spec.shape}")
    # Checked on the shapes, before any row is converted: a 64 MiB message holds many rows.
    plane.admit(max(len(tensor) for tensor in tensors.values()))
    trusted = model.trusted_inputs(tensors)
    if trusted is not None:
        return trusted
    raw = model.instances_from_tensors(tensors)
    instances = await plane.validate_instances(raw, prefix=model.v2_inputs[0].name)
    return await plane.preprocess(instances)
