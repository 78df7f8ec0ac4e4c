"""Adaptive batching for every transport of a service.

We drive BentoML's own adaptive-batching algorithm (`CorkDispatcher`, the one behind
`@bentoml.api(batchable=True)`) from our gateway instead of going through BentoML's HTTP endpoint,
because that endpoint is the only thing that feeds BentoML's dispatcher: JSON, HTML form, v2 REST
and gRPC requests would otherwise need the in-process self-call, which drops in-flight requests
(bentoml#5540), and BentoML's validation errors cannot carry the 422 details our clients need.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np
from bentoml._internal.marshal.dispatcher import CorkDispatcher, NonBlockSema

from medserve.serving.errors import ServiceError

BatchFunction = Callable[[np.ndarray], Awaitable[np.ndarray]]


def _overloaded() -> np.ndarray:
    """CorkDispatcher's fallback, called when a queued job was cancelled.

    It cancels jobs itself to shed load (-> 503), but it also lands here when the *caller* was
    cancelled (the client went away): that must stay a cancellation, not count as overload.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    raise ServiceError(503, "overloaded", "the model's queue is full; retry after a short back-off")


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """How one worker forms batches: rows per batch and batches in flight at once."""

    max_batch_size: int
    concurrency: int = 1  # > 1 only for models that compute outside the GIL on several cores


class AdaptiveBatcher:
    """Groups concurrent `submit` calls into batches of at most `max_batch_size` rows, running up
    to `concurrency` batches at the same time.

    A request that the dispatcher predicts would wait longer than `max_latency_ms` is shed with a
    503 `overloaded` error instead of queueing without bound.
    """

    def __init__(
        self,
        infer: BatchFunction,
        max_batch_size: int,
        max_latency_ms: int,
        concurrency: int = 1,
    ) -> None:
        self._infer = infer
        self._dispatcher: CorkDispatcher[np.ndarray, np.ndarray] = CorkDispatcher(
            max_latency_in_ms=max_latency_ms,
            max_batch_size=max_batch_size,
            shared_sema=NonBlockSema(concurrency),
            fallback=_overloaded,
            get_batch_size=len,
            batch_dim=(0, 0),
        )
        self._call = self._dispatcher(self._run)

    async def _run(self, jobs: Sequence[np.ndarray]) -> list[np.ndarray]:
        sizes = [len(job) for job in jobs]
        outputs = await self._infer(np.concatenate(jobs, axis=0))
        return np.split(outputs, np.cumsum(sizes)[:-1])

    async def submit(self, rows: np.ndarray) -> np.ndarray:
        """Model outputs for `rows`, computed inside an adaptive batch."""
        return await self._call(rows)
