"""Shared measuring pieces of the model benchmarks: timing a forward pass in this process,
and reading a running service's own batch counters from `/metrics`."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

WARMUP_CALLS = 10
T = TypeVar("T")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True, slots=True)
class RawResult:
    """One in-process runner timed on one batch size; rows are beats, images, ..."""

    runner: str
    batch: int
    calls: int
    mean_ms: float
    p99_ms: float
    rows_per_s: float


def time_calls(
    fn: Callable[[np.ndarray], Any], x: np.ndarray, seconds: float, runner: str = ""
) -> RawResult:
    """Time `fn(x)` call by call for about `seconds` after WARMUP_CALLS warm-up calls."""
    for _ in range(WARMUP_CALLS):
        fn(x)
    durations: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        began = time.perf_counter()
        fn(x)
        durations.append(time.perf_counter() - began)
    return _result(runner, len(x), durations, time.perf_counter() - start)


def time_concurrent(
    fn: Callable[[np.ndarray], Any], x: np.ndarray, seconds: float, threads: int, runner: str = ""
) -> RawResult:
    """`time_calls` with `threads` threads calling `fn(x)` at once (for runtimes that release
    the GIL, as a service with several batches in flight runs them); per-call times pooled."""
    for _ in range(WARMUP_CALLS):
        fn(x)
    durations: list[list[float]] = [[] for _ in range(threads)]
    deadline = time.perf_counter() + seconds

    def loop(mine: list[float]) -> None:
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            fn(x)
            mine.append(time.perf_counter() - began)

    workers = [threading.Thread(target=loop, args=(d,)) for d in durations]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    pooled = [d for mine in durations for d in mine]
    return _result(runner, len(x), pooled, time.perf_counter() - start)


def _result(runner: str, batch: int, durations: list[float], elapsed: float) -> RawResult:
    ms = np.asarray(durations) * 1e3
    return RawResult(
        runner=runner,
        batch=batch,
        calls=len(ms),
        mean_ms=float(ms.mean()),
        p99_ms=float(np.percentile(ms, 99)),
        rows_per_s=batch * len(ms) / elapsed,
    )


def metric_sum(text: str, sample: str, **labels: str) -> float:
    """Sum of the Prometheus samples named `sample` whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


@dataclass(frozen=True, slots=True)
class BatchStats:
    """The service's adaptive batches during one load run, from its own metrics."""

    mean_batch: float
    inference_ms: float  # model time per batch


def batches_during(base_url: str, model: str, drive: Callable[[], T]) -> tuple[T, BatchStats]:
    """Run `drive()` (a load run) and return its result with the batches formed meanwhile."""
    before = batch_totals(base_url, model)
    result = drive()
    after = batch_totals(base_url, model)
    batches, rows, seconds = (a - b for a, b in zip(after, before, strict=True))
    if not batches:
        return result, BatchStats(0.0, 0.0)
    return result, BatchStats(rows / batches, seconds / batches * 1e3)


def batch_totals(base_url: str, model: str) -> tuple[float, float, float]:
    """(batches, rows, inference seconds) the service has counted so far, all workers."""
    with _OPENER.open(f"{base_url}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    return (
        metric_sum(text, "medserve_batch_size_count", model=model),
        metric_sum(text, "medserve_batch_size_sum", model=model),
        metric_sum(text, "medserve_inference_duration_seconds_sum", model=model),
    )
