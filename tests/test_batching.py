"""The shared adaptive batcher: batches in flight at once (unit tests, no server)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from medserve.serving.batching import AdaptiveBatcher


def most_batches_in_flight(concurrency: int) -> int:
    in_flight = peak = 0

    async def infer(rows: np.ndarray) -> np.ndarray:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.03)
        in_flight -= 1
        return rows * 2

    async def run() -> list[np.ndarray]:
        batcher = AdaptiveBatcher(
            infer, max_batch_size=1, max_latency_ms=10_000, concurrency=concurrency
        )
        return await asyncio.gather(*(batcher.submit(np.full((1, 2), i)) for i in range(12)))

    answers = asyncio.run(run())
    assert [int(a[0, 0]) for a in answers] == [2 * i for i in range(12)]  # each its own answer
    return peak


@pytest.mark.parametrize("concurrency", [1, 2, 3])
def test_at_most_concurrency_batches_run_at_once(concurrency: int) -> None:
    assert most_batches_in_flight(concurrency) == concurrency
