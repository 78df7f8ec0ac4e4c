"""Tensors of the Open Inference Protocol v2: declared specs and the wire codecs.

No transport lives here: the REST adapter (JSON `data`, binary extension) and the gRPC adapter
(`raw_input_contents`, typed contents) both decode into NumPy arrays with these functions, and
encode the arrays `TensorSpec.column_tensor` derives from a model's answer columns.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from medserve.serving.errors import ServiceError

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
MAX_WIRE_ELEMENT_BYTES = 10  # a 64-bit varint in protobuf typed contents


class TensorSpec(BaseModel):
    """An input or output tensor a model declares (`-1` = any size in that dimension).

    An output tensor is one answer column (`column`, default: the tensor's name) cast to
    `datatype`; the mapping from answers to tensors is this declaration, nothing per model.
    """

    name: str
    datatype: str
    shape: list[int]
    accepted_datatypes: list[str] = Field(default_factory=list, exclude=True)
    column: str | None = Field(default=None, exclude=True)

    def max_row_bytes(self) -> int | None:
        """Wire bytes of one row at most (None: unbounded: BYTES, or a free inner dimension).
        Typed contents are the larger encoding: a varint takes up to 10 bytes."""
        inner = self.shape[1:]
        if self.datatype == BYTES or any(dim < 0 for dim in inner):
            return None
        return math.prod(inner) * MAX_WIRE_ELEMENT_BYTES

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}

    def accepts(self, datatype: str) -> bool:
        return datatype in (self.accepted_datatypes or [self.datatype])

    def fits(self, shape: Sequence[int]) -> bool:
        """`shape` matches the declared one (rank and every fixed dimension), rows >= 1."""
        return (
            len(shape) == len(self.shape)
            and all(want in (-1, got) for want, got in zip(self.shape, shape, strict=True))
            and shape[0] > 0
        )

    def column_tensor(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """This output tensor, taken from the answer columns of a batch."""
        values = columns[self.column or self.name]
        if self.datatype == BYTES:
            return np.array(
                [_element_bytes(v) for v in values.ravel().tolist()], dtype=object
            ).reshape(values.shape)
        return np.asarray(values, dtype=NUMPY_TYPES[self.datatype])


def _element_bytes(value: Any) -> bytes:
    """One BYTES element of an answer: structured answers (a triage step) travel as JSON, an
    absent value (the prediction id of a step that concludes nothing) as empty bytes."""
    if isinstance(value, bytes):
        return value
    if value is None:
        return b""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    return str(value).encode()


def bad_tensor(detail: str, field: str | None = None) -> ServiceError:
    """A 400 per the protocol: the request's tensors are malformed or invalid."""
    return ServiceError(400, "invalid_tensor", detail, field=field)


def element_count(name: str, shape: Sequence[int]) -> int:
    """Elements of a tensor of `shape` (non-negative integers only)."""
    if any((not isinstance(d, int)) or d < 0 for d in shape):
        raise bad_tensor(f"input '{name}': shape must be non-negative integers", name)
    return math.prod(shape)


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [item for element in data for item in _flatten(element)]
    return [data]


def tensor_from_json(name: str, datatype: str, shape: Sequence[int], data: Any) -> np.ndarray:
    """A JSON `data` field (flat or nested, row-major) -> a NumPy array of `shape`."""
    count = element_count(name, shape)
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
    """Raw little-endian bytes (gRPC `raw_input_contents`, HTTP binary extension) -> array.

    Numeric tensors are a zero-copy view of `raw`: no Python object per value.
    """
    count = element_count(name, shape)
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
