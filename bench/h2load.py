"""Closed-loop gRPC load generation with /usr/bin/h2load (Debian ``nghttp2-client``).

h2load is a C HTTP/2 client, so it is not the bottleneck: it POSTs one fixed body (a
length-prefixed gRPC message, `grpc_frame`) over h2c with ``content-type: application/grpc`` and
``te: trailers``, ``-m 1`` stream per connection (closed loop, like wrk). h2load prints no
percentiles, so p50/p99 come from its ``--log-file`` (one row per request: start time in µs since
the epoch, HTTP status, µs until the end of the response). It cannot see the ``grpc-status``
trailer either (a failed call is still HTTP 200): callers check one call with a real gRPC client
first and count failures on the server (its metrics). Calls to medserve need its bearer token in
the ``authorization`` header (gRPC metadata): pass ``headers=bench.access.h2load_headers(token)``.
"""

from __future__ import annotations

import math
import re
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen import LoadResult, run_client

H2LOAD = "/usr/bin/h2load"
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")

_FINISHED = re.compile(r"finished in ([\d.]+)(m?s)")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)


@dataclass(frozen=True, slots=True)
class H2loadRun:
    """One h2load run: the common `LoadResult` plus h2load's own request counts."""

    load: LoadResult
    done: int
    succeeded: int


def grpc_frame(message: bytes) -> bytes:
    """gRPC length-prefixed message: flag 0 (uncompressed), 4-byte big-endian length, message."""
    return struct.pack(">BI", 0, len(message)) + message


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile (q in [0, 100]) of an ascending list."""
    if not sorted_values:
        raise ValueError("no values")
    return sorted_values[max(1, math.ceil(len(sorted_values) * q / 100)) - 1]


def _parse_stdout(stdout: str) -> tuple[float, list[int]]:
    """(measured seconds, [total, started, done, succeeded, failed, errored, timeout])."""
    finished, requests = _FINISHED.search(stdout), _REQUESTS.search(stdout)
    if finished is None or requests is None:
        raise RuntimeError(f"unexpected h2load output:\n{stdout}")
    seconds = float(finished.group(1)) / (1000.0 if finished.group(2) == "ms" else 1.0)
    return seconds, [int(x) for x in requests.groups()]


def _latencies_us(log: Path) -> list[int]:
    """Sorted latencies (µs) of the 2xx rows of an h2load --log-file."""
    latencies = []
    for line in log.read_text().splitlines():
        _, status, elapsed_us = line.split("\t")[:3]
        if 200 <= int(status) < 300:
            latencies.append(int(elapsed_us))
    latencies.sort()
    return latencies


def run_h2load(
    url: str,
    body: bytes,
    connections: int,
    duration_s: float,
    threads: int = 1,
    headers: tuple[str, ...] = GRPC_HEADERS,
    during: Callable[[], None] | None = None,
) -> H2loadRun:
    """POST `body` to `url` over `connections` h2c connections, one stream each, for `duration_s`.

    req/s = 2xx answers / duration; errors = failed + errored + timed-out requests as h2load
    sees them (HTTP level only, see the module docstring). No ``--warm-up-time``: warm up with a
    separate run first. `during` runs while h2load does (see `run_client`).
    """
    threads = max(1, min(threads, connections))
    with tempfile.TemporaryDirectory(prefix="h2load-") as tmp:
        data, log = Path(tmp, "body.bin"), Path(tmp, "requests.log")
        data.write_bytes(body)
        cmd = [H2LOAD, "-c", str(connections), "-m", "1", "-t", str(threads)]
        cmd += ["-D", f"{duration_s:g}", "-d", str(data), "--log-file", str(log)]
        for header in headers:
            cmd += ["-H", header]
        stdout, cpu_seconds = run_client([*cmd, url], during)
        latencies = _latencies_us(log)
    seconds, (_, _, done, succeeded, failed, errored, timeout) = _parse_stdout(stdout)
    if not latencies:
        raise RuntimeError(f"h2load got no 2xx answer from {url}:\n{stdout}")
    load = LoadResult(
        connections=connections,
        requests=succeeded,
        rps=succeeded / seconds,
        p50_ms=percentile(latencies, 50) / 1e3,
        p99_ms=percentile(latencies, 99) / 1e3,
        errors=failed + errored + timeout,
        client_cpu_seconds=cpu_seconds,
    )
    return H2loadRun(load=load, done=done, succeeded=succeeded)


def warmup_h2load(
    url: str, body: bytes, seconds: float, headers: tuple[str, ...] = GRPC_HEADERS
) -> None:
    """Drive a short load (4 connections) to warm the server; fail without a 2xx answer."""
    run_h2load(url, body, connections=4, duration_s=seconds, headers=headers)


def h2load_version() -> str:
    """h2load's version line, e.g. "h2load nghttp2/1.52.0"."""
    stdout, _ = run_client([H2LOAD, "--version"])
    return stdout.strip()
