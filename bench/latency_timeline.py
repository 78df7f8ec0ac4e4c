"""Latency over time of one service under closed-loop load: where does the tail come from?

Usage: ``uv run python -m bench.latency_timeline URL [--body FILE] [--connections 16]
[--duration 20] [--window-ms 250] [--content-type application/json] [--grpc]
[--token TOKEN | --no-token]``.

h2load (HTTP/1.1 with ``--h1``, or h2c for gRPC) logs every request with its start time and
duration; this groups them into windows of the run and prints, per window, the count, p50, p99
and max, then the slowest requests and how far apart the slow windows are. A stall that recurs
every N seconds (a WAL checkpoint, a full garbage collection, a throttled export) shows as slow
windows at a regular spacing; queueing shows as a tail spread evenly over the run.

medserve's services need a bearer token (``authorization`` header; gRPC metadata alike): pass one
with ``--token`` (e.g. ``$(uv run medserve token --role predict)``), or leave it out to mint one
with the local signing key of the current ``MEDSERVE_HOME`` (``bench.access.bench_token``: the
service must run from the same home, in local mode); ``--no-token`` for a server without access
control (MLServer, ``MEDSERVE_AUTH_MODE=off``). Answers other than 2xx are counted and reported.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from bench.access import AUTHORIZATION, bench_token
from bench.h2load import H2LOAD, percentile
from bench.loadgen import markdown_table, run_client

JSON = "application/json"
GRPC = "application/grpc"


def timeline(
    url: str,
    body: bytes,
    connections: int,
    duration_s: float,
    content_type: str = JSON,
    h1: bool = True,
    token: str | None = None,
) -> tuple[list[tuple[float, int]], dict[int, int]]:
    """(start seconds from the first request, latency µs) of every 2xx answer of one run, and
    the count of every other status. `token` goes in the `authorization` header (medserve)."""
    with tempfile.TemporaryDirectory(prefix="timeline-") as tmp:
        data, log = Path(tmp, "body"), Path(tmp, "requests.log")
        data.write_bytes(body)
        cmd = [H2LOAD, "-c", str(connections), "-m", "1", "-D", f"{duration_s:g}"]
        cmd += ["-d", str(data), "--log-file", str(log), "-H", f"content-type: {content_type}"]
        if content_type == GRPC:
            cmd += ["-H", "te: trailers"]
        if token:
            cmd += ["-H", f"{AUTHORIZATION}: Bearer {token}"]
        if h1:
            cmd.append("--h1")
        run_client([*cmd, url])
        rows, others = [], Counter[int]()
        for line in log.read_text().splitlines():
            start_us, status, elapsed_us = (int(x) for x in line.split("\t")[:3])
            if 200 <= status < 300:
                rows.append((start_us, elapsed_us))
            else:
                others[status] += 1
    if not rows:
        raise SystemExit(f"no 2xx answer from {url}; other statuses: {dict(others)}")
    first = min(start for start, _ in rows)
    return sorted(((start - first) / 1e6, elapsed) for start, elapsed in rows), dict(others)


def windows(samples: list[tuple[float, int]], window_ms: float) -> list[dict[str, float]]:
    """Per window of the run: requests, p50, p99 and max latency in ms."""
    grouped: dict[int, list[int]] = defaultdict(list)
    for start, elapsed in samples:
        grouped[int(start * 1000 // window_ms)].append(elapsed)
    rows = []
    for index in sorted(grouped):
        values = sorted(grouped[index])
        rows.append(
            {
                "from s": index * window_ms / 1000,
                "requests": len(values),
                "p50 ms": percentile(values, 50) / 1e3,
                "p99 ms": percentile(values, 99) / 1e3,
                "max ms": values[-1] / 1e3,
            }
        )
    return rows


def summary(samples: list[tuple[float, int]], rows: list[dict[str, float]]) -> list[str]:
    """The run's percentiles, the slowest requests and the spacing of slow windows."""
    latencies = sorted(elapsed for _, elapsed in samples)
    p99 = percentile(latencies, 99)
    slow = [r["from s"] for r in rows if r["max ms"] * 1e3 >= p99]
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(slow)]
    worst = sorted(samples, key=lambda s: s[1], reverse=True)[:10]
    return [
        f"- {len(latencies)} answers; p50 {percentile(latencies, 50) / 1e3:.2f} ms, "
        f"p99 {p99 / 1e3:.2f} ms, p99.9 {percentile(latencies, 99.9) / 1e3:.2f} ms, "
        f"max {latencies[-1] / 1e3:.2f} ms",
        f"- windows holding a request at or above p99: {len(slow)} of {len(rows)}; "
        f"spacing (s): {gaps[:20]}",
        "- slowest requests (start s, ms): "
        + ", ".join(f"({start:.2f}, {elapsed / 1e3:.1f})" for start, elapsed in worst),
    ]


def local_token() -> str | None:
    """The bench token of the current MEDSERVE_HOME's local key (None in `off` mode); refuses to
    create a key the service cannot know."""
    from medserve.auth.settings import AuthMode, AuthSettings

    settings = AuthSettings()
    if settings.mode is AuthMode.LOCAL and not settings.key_file.exists():
        raise SystemExit(
            f"no local signing key at {settings.key_file}: pass --token (e.g. "
            "`uv run medserve token --role predict` with the service's MEDSERVE_HOME) or "
            "--no-token"
        )
    return bench_token()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--body", type=Path, required=True, help="the request body file")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--window-ms", type=float, default=250.0)
    parser.add_argument("--content-type", default=JSON)
    parser.add_argument("--grpc", action="store_true", help="h2c (gRPC) instead of HTTP/1.1")
    access = parser.add_mutually_exclusive_group()
    access.add_argument(
        "--token", help="bearer token to send (default: minted with this MEDSERVE_HOME's key)"
    )
    access.add_argument(
        "--no-token", action="store_true", help="send no token (MLServer, auth off)"
    )
    args = parser.parse_args(argv)
    token = None if args.no_token else args.token or local_token()
    samples, others = timeline(
        args.url,
        args.body.read_bytes(),
        args.connections,
        args.duration,
        GRPC if args.grpc else args.content_type,
        h1=not args.grpc,
        token=token,
    )
    rows = windows(samples, args.window_ms)
    print("\n".join(summary(samples, rows)))
    print(f"- answers other than 2xx (not in the figures): {others or 'none'}")
    print()
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
