"""Open Inference Protocol v2 tensor codecs and overload mapping (no server needed)."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from medserve.serving.batching import AdaptiveBatcher
from medserve.serving.errors import ServiceError
from medserve.serving.oip_grpc import STATUS_CODES
from medserve.serving.tensors import (
    NUMPY_TYPES,
    datatype_of,
    tensor_from_json,
    tensor_from_raw,
    tensor_to_json,
    tensor_to_raw,
)


@pytest.mark.parametrize("datatype", sorted(set(NUMPY_TYPES) - {"BOOL"}))
def test_raw_roundtrip_for_every_numeric_datatype(datatype: str) -> None:
    array = np.arange(6).reshape(2, 3).astype(NUMPY_TYPES[datatype])
    decoded = tensor_from_raw("x", datatype, [2, 3], tensor_to_raw(array))
    np.testing.assert_array_equal(decoded, array)
    assert datatype_of(decoded) == datatype


def test_bytes_roundtrip_raw_and_json() -> None:
    array = np.array([b"01ABC", b"", b"xyz"], dtype=object)
    raw = tensor_to_raw(array)
    assert raw[:4] == (5).to_bytes(4, "little")
    assert tensor_from_raw("ids", "BYTES", [3], raw).tolist() == array.tolist()
    assert tensor_to_json(array) == ["01ABC", "", "xyz"]
    assert tensor_from_json("ids", "BYTES", [3], ["01ABC", "", "xyz"]).tolist() == array.tolist()


def test_json_accepts_flat_and_nested_row_major_data() -> None:
    flat = tensor_from_json("x", "FP64", [2, 2], [1, 2, 3, 4.5])
    nested = tensor_from_json("x", "FP64", [2, 2], [[1, 2], [3, 4.5]])
    np.testing.assert_array_equal(flat, nested)


@pytest.mark.parametrize(
    ("datatype", "shape", "data"),
    [
        ("FP64", [1, 3], [1.0, 2.0]),  # too few values
        ("INT64", [2], [1, 2.5]),  # a float in an integer tensor
        ("FP32", [1], [True]),  # a bool in a float tensor
        ("FP32", [1], ["1"]),  # a string in a float tensor
        ("INT8", [1], [1000]),  # does not fit
        ("COMPLEX", [1], [1]),  # unknown datatype
        ("FP64", [-1], [1]),  # negative dimension
    ],
)
def test_json_tensor_errors_are_400(datatype: str, shape: list[int], data: list[object]) -> None:
    with pytest.raises(ServiceError) as raised:
        tensor_from_json("x", datatype, shape, data)
    assert raised.value.status == 400


def test_raw_tensor_of_the_wrong_size_is_400() -> None:
    with pytest.raises(ServiceError) as raised:
        tensor_from_raw("x", "FP64", [1, 13], b"\0" * 100)
    assert raised.value.status == 400
    with pytest.raises(ServiceError):
        tensor_from_raw("x", "BYTES", [1], b"\x05\0\0\0ab")  # truncated element


def test_overloaded_batcher_sheds_with_503_and_grpc_maps_it_to_unavailable() -> None:
    async def slow(rows: np.ndarray) -> np.ndarray:
        await asyncio.sleep(0.05)
        return rows

    async def flood() -> list[object]:
        batcher = AdaptiveBatcher(slow, max_batch_size=1, max_latency_ms=20)
        calls = [batcher.submit(np.ones((1, 2))) for _ in range(40)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(flood())
    shed = [r for r in results if isinstance(r, ServiceError)]
    assert shed and all(r.status == 503 and r.error == "overloaded" for r in shed)
    assert any(isinstance(r, np.ndarray) for r in results)  # the rest were served
    assert STATUS_CODES[503] == grpc.StatusCode.UNAVAILABLE


def test_a_cancelled_caller_is_not_counted_as_overload() -> None:
    async def slow(rows: np.ndarray) -> np.ndarray:
        await asyncio.sleep(0.2)
        return rows

    async def cancel_one() -> BaseException | None:
        batcher = AdaptiveBatcher(slow, max_batch_size=1, max_latency_ms=10_000)
        first = asyncio.ensure_future(batcher.submit(np.ones((1, 2))))
        waiting = asyncio.ensure_future(batcher.submit(np.ones((1, 2))))
        await asyncio.sleep(0.05)
        waiting.cancel()  # the client went away while queued
        await asyncio.gather(waiting, return_exceptions=True)
        await first
        return waiting.exception() if not waiting.cancelled() else None

    assert asyncio.run(cancel_one()) is None  # cancelled, not a 503 ServiceError
