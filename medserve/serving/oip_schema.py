"""The Open Inference Protocol v2 REST answers as pydantic models, for the API contract.

The handlers in `oip_rest.py` build these documents as plain dicts on the hot path; these models
describe them (`openapi.py`), and the fuzz tests check every answer against them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 marks a variable dimension (the rows).")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class OutputTensor(BaseModel):
    """One output tensor: `data` (row-major, flattened or nested), or with the binary tensor
    extension `parameters.binary_data_size` bytes after the JSON header."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str
    parameters: dict[str, Any] = Field(description="`model_tag`: the full tag that answered.")
    outputs: list[OutputTensor]
