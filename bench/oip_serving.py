"""Open Inference Protocol v2 side by side: medserve vs MLServer 1.7.1, per transport.

Usage: ``uv run python -m bench.oip_serving [--duration 10] [--connections 16,64]
[--mlserver-workers 0,2] [--client-threads 1] [--workers 2] [--out FILE] [--keep]``.

One run trains the heart model into a throw-away MEDSERVE_HOME/BENTOML_HOME and serves it, one
server at a time, from MLServer (the compiled-scorer runtime, once per ``parallel_workers``) and
from one ``bentoml serve`` of medserve. Every answer (gRPC, v2 REST, native ``/predict``) is
checked against the others first. Then each transport gets a warm-up and one closed-loop run per
connection count: wrk for HTTP, h2load for gRPC (server-side failures read from each server's
Prometheus metrics, since h2load cannot see ``grpc-status``). Every medserve request carries a
bearer token (``bench.access``: HTTP ``Authorization`` header, gRPC ``authorization`` metadata);
MLServer's carry none (it has no access control). It prints markdown tables of
throughput/latency, medserve / MLServer per transport, and per-process resident memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import os
import subprocess
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2

from bench.access import auth_headers, bench_token, grpc_metadata, h2load_headers
from bench.h2load import GRPC_HEADERS, grpc_frame, h2load_version, run_h2load, warmup_h2load
from bench.heart_serving import (
    JSON,
    MEDSERVE,
    MLSERVER,
    SCORER,
    SERVICE_TARGET,
    TOLERANCE,
    WARMUP_S,
    Measurement,
    ProcessRss,
    ServerConfig,
    Setup,
    check,
    get_text,
    host_lines,
    isolate_homes,
    medserve_proba,
    memory,
    post_json,
    prepare_model,
    publish,
    rss_table,
    serve_medserve,
    serve_mlserver_pid,
    temp_dir,
)
from bench.loadgen import LoadResult, markdown_table, run_wrk, warmup, wrk_version
from bench.mlserver_peer import (
    DEFAULT_ROOT,
    MODEL_NAME,
    N_FEATURES,
    SCORER_RUNTIME,
    ensure_mlserver_venv,
    free_port,
    settings_of,
    v2_request_body,
)

GRPC = "gRPC"
GRPC_STREAM = "gRPC stream"
V2_REST = "v2 REST"
NATIVE = "native HTTP"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
MODEL_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"
V2_INFER = f"/v2/models/{MODEL_NAME}/infer"
INPUT = "features"
OURS_OUTPUT = "probabilities"  # medserve's class-probability tensor
THEIRS_OUTPUT = "predict_proba"  # the compiled-scorer runtime's
# medserve / MLServer's best config, req/s (issue 16: unary gRPC parity while medserve logs
# durably and MLServer does not, streams 2x; issue 3: v2 REST 1.5x; the native API is the heart
# benchmark's 2x).
RPS_TARGETS = {GRPC: 1.0, GRPC_STREAM: 2.0, V2_REST: 1.5, NATIVE: 2.0}
# Where the issues also ask for a p99 no worse than the peer's (for gRPC it is only reported).
P99_NO_WORSE = {V2_REST, NATIVE}
TARGET = "target met (req/s ratio; p99 <= for HTTP)"
# MLServer has no native API: medserve's /predict is compared with MLServer's v2 REST. Its
# ModelStreamInfer needs a runtime implementing `predict_stream` (no adaptive batching, no
# parallel workers: its docs' limitations), so medserve's streams face its best unary gRPC.
PEER_TRANSPORT = {GRPC: GRPC, GRPC_STREAM: GRPC, V2_REST: V2_REST, NATIVE: V2_REST}
# gRPC failures are counted between two metric reads EDGE_S after h2load starts and EDGE_S before
# it stops: when h2load stops it resets the calls in flight, and both servers count some of
# those cancellations as failures (MLServer: started, never handled; medserve: "overloaded",
# BentoML's CorkDispatcher turns the CancelledError into its fallback).
EDGE_S = 0.5


@dataclass(frozen=True, slots=True)
class ServerCalls:
    """A server's own count of gRPC ModelInfer calls: ok, failed by reason, and (MLServer only)
    started but never finished (in flight, or cancelled by the client)."""

    ok: int
    failed: dict[str, int]
    unfinished: int = 0

    @property
    def total(self) -> int:
        return self.ok + sum(self.failed.values()) + self.unfinished

    def minus(self, before: ServerCalls) -> ServerCalls:
        reasons = self.failed.keys() | before.failed.keys()
        failed = {r: self.failed.get(r, 0) - before.failed.get(r, 0) for r in sorted(reasons)}
        return ServerCalls(
            self.ok - before.ok,
            {r: n for r, n in failed.items() if n},
            self.unfinished - before.unfinished,
        )


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One transport of a running server; `calls` (gRPC only) reads its server-side counts.

    A stream endpoint (`stream_connections` set) sends `body` (one framed request) that many
    times per stream so that connections x messages = the concurrency being measured.
    `headers` go with every request: for wrk (HTTP) name -> value, for h2load (gRPC) its `-H`
    lines (`bench.access.h2load_headers`: content type, te, the token)."""

    transport: str
    url: str
    body: bytes
    calls: Callable[[], ServerCalls] | None = None
    stream_connections: int | None = None
    http_headers: dict[str, str] = dataclasses.field(default_factory=dict)
    h2_headers: tuple[str, ...] = GRPC_HEADERS


@dataclass(frozen=True, slots=True)
class Run:
    """One measured load run; for gRPC also h2load's done count and the server's own counts,
    over the whole run (`server`) and inside it (`window`, away from its start and stop)."""

    transport: str
    load: LoadResult
    h2load_done: int | None = None
    server: ServerCalls | None = None
    window: ServerCalls | None = None


@dataclass(frozen=True, slots=True)
class ConfigResult:
    """All runs and the memory of one server configuration."""

    config: ServerConfig
    runs: list[Run]
    rss: list[ProcessRss]
    load_average: float


# --------------------------------------------------------------------------- requests, answers


def grpc_request_frame(row: list[float], output: str) -> bytes:
    """gRPC frame of a ModelInferRequest: FP64 "features" [1, 13] in raw_input_contents."""
    request = service_pb2.ModelInferRequest(model_name=MODEL_NAME)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = INPUT, "FP64"
    tensor.shape.extend([1, N_FEATURES])
    request.outputs.add().name = output
    request.raw_input_contents.append(np.asarray([row], dtype="<f8").tobytes())
    return grpc_frame(request.SerializeToString())


def grpc_infer(
    port: int, frame: bytes, timeout_s: float = 60.0, metadata: tuple[tuple[str, str], ...] = ()
) -> Any:
    """Send the message inside `frame`, byte for byte, with grpcio and `metadata` (medserve:
    the bearer token); retry while UNAVAILABLE."""
    if frame[0] != 0 or int.from_bytes(frame[1:5], "big") != len(frame) - 5:
        raise ValueError("not an uncompressed gRPC frame")
    options = [("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        call = channel.unary_unary(
            MODEL_INFER, response_deserializer=service_pb2.ModelInferResponse.FromString
        )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return call(frame[5:], timeout=10, metadata=metadata or None)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                time.sleep(0.25)


def grpc_proba(response: Any, output: str) -> list[float]:
    """The [1, 2] FP64 output `output` of a ModelInferResponse (raw or typed contents)."""
    index = [o.name for o in response.outputs].index(output)
    tensor = response.outputs[index]
    if tensor.datatype != "FP64" or list(tensor.shape) != [1, 2]:
        raise RuntimeError(f"unexpected output tensor {tensor}")
    if response.raw_output_contents:
        return [float(p) for p in np.frombuffer(response.raw_output_contents[index], "<f8")]
    return [float(p) for p in tensor.contents.fp64_contents]


def rest_proba(
    url: str, body: bytes, output: str, headers: dict[str, str] | None = None
) -> list[float]:
    """The output `output` of a v2 REST JSON answer (`headers`: medserve's bearer token)."""
    answer = post_json(url, body, headers=headers)
    return [float(p) for p in next(o for o in answer["outputs"] if o["name"] == output)["data"]]


# --------------------------------------------------------------------------- server-side counts


def sample_totals(text: str, sample: str, by: str, **match: str) -> dict[str, int]:
    """Sum of Prometheus samples named `sample` whose labels include `match`, by label `by`."""
    totals: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in match.items()):
                key = s.labels.get(by, "")
                totals[key] = totals.get(key, 0) + int(s.value)
    return totals


AUTH_REFUSALS = ("unauthenticated", "forbidden")


def medserve_grpc_calls(base_url: str, api: str = "grpc") -> ServerCalls:
    """medserve's gRPC calls (unary `grpc`, or `grpc_stream` messages) by outcome
    (`medserve_request_duration_seconds_count`), plus the calls its access check refused
    (`medserve_rejected_requests_total`, not per API: only one transport runs at a time)."""
    text = get_text(f"{base_url}/metrics")
    by_outcome = sample_totals(text, "medserve_request_duration_seconds_count", "outcome", api=api)
    rejected = sample_totals(text, "medserve_rejected_requests_total", "reason")
    for reason in AUTH_REFUSALS:
        if rejected.get(reason):
            by_outcome[f"auth: {reason}"] = rejected[reason]
    return ServerCalls(by_outcome.pop("ok", 0), by_outcome)


def mlserver_grpc_calls(metrics_url: str) -> ServerCalls:
    """MLServer's ModelInfer calls: its py-grpc-prometheus counters and its data plane's.

    A call that ends in ``context.abort`` (how MLServer answers errors) or is cancelled is
    counted in ``grpc_server_started_total`` but never in ``grpc_server_handled_total``; the
    errors raised while inferring are counted in ``model_infer_request_failure_total`` (shared
    with REST: only gRPC runs while this is read). Unfinished = started - handled.
    """
    text = get_text(metrics_url)
    method = {"grpc_method": "ModelInfer"}
    started = sum(sample_totals(text, "grpc_server_started_total", "", **method).values())
    handled = sample_totals(text, "grpc_server_handled_total", "grpc_code", **method)
    failed = {f"grpc_code={code}": n for code, n in handled.items() if code != "OK"}
    inference = sum(sample_totals(text, "model_infer_request_failure_total", "").values())
    if inference:
        failed["model_infer_request_failure"] = inference
    unfinished = started - sum(handled.values()) - inference
    return ServerCalls(handled.get("OK", 0), failed, max(0, unfinished))


def settled(calls: Callable[[], ServerCalls], timeout_s: float = 5.0) -> ServerCalls:
    """Read `calls` until two reads 0.25 s apart agree (calls in flight have finished)."""
    last, deadline = calls(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = calls()
        if now == last:
            break
        last = now
    return last


# --------------------------------------------------------------------------- measuring


def measure_grpc(
    endpoint: Endpoint, calls: Callable[[], ServerCalls], connections: int, args: argparse.Namespace
) -> Run:
    """One h2load run; the server's counts over the whole run and inside it (see EDGE_S).

    For a stream endpoint `connections` is the concurrency: h2load opens `stream_connections`
    connections, each one stream at a time carrying `connections / stream_connections` framed
    requests (sent at once, as `async_stream_infer` does), and a stream ends when every one is
    answered. req/s counts answered requests (streams x messages); p50/p99 are per stream,
    i.e. until its last answer (an upper bound of each request's latency)."""
    body, h2_connections, messages = endpoint.body, connections, 1
    if endpoint.stream_connections is not None:
        h2_connections = endpoint.stream_connections
        messages = max(1, connections // h2_connections)
        body = endpoint.body * messages
    samples: list[ServerCalls] = []

    def sample() -> None:
        time.sleep(EDGE_S)
        samples.append(calls())
        time.sleep(args.duration - 2 * EDGE_S)
        samples.append(calls())

    before = settled(calls)
    h2 = run_h2load(
        endpoint.url,
        body,
        h2_connections,
        args.duration,
        args.client_threads,
        headers=endpoint.h2_headers,
        during=sample,
    )
    server = settled(calls).minus(before)
    window = samples[1].minus(samples[0])
    load = dataclasses.replace(
        h2.load,
        connections=connections,
        requests=h2.load.requests * messages,
        rps=h2.load.rps * messages,
        errors=h2.load.errors + sum(window.failed.values()),
    )
    return Run(endpoint.transport, load, h2.done * messages, server, window)


def measure_endpoint(endpoint: Endpoint, args: argparse.Namespace) -> list[Run]:
    """Warm one transport up, then one closed-loop run per connection count."""
    runs = []
    if endpoint.calls is None:
        warmup(endpoint.url, endpoint.body, JSON, WARMUP_S, endpoint.http_headers)
    else:
        warmup_h2load(endpoint.url, endpoint.body, WARMUP_S, endpoint.h2_headers)
    for connections in args.connections:
        if endpoint.calls is None:
            load = run_wrk(
                endpoint.url,
                endpoint.body,
                JSON,
                connections,
                args.duration,
                args.client_threads,
                endpoint.http_headers,
            )
            run = Run(endpoint.transport, load)
        else:
            run = measure_grpc(endpoint, endpoint.calls, connections, args)
        print(
            f"   {endpoint.transport} c={connections}: {run.load.rps:.0f} req/s, "
            f"p50 {run.load.p50_ms:.2f} ms, p99 {run.load.p99_ms:.2f} ms, "
            f"errors {run.load.errors}",
            flush=True,
        )
        runs.append(run)
    return runs


def measure_server(
    config: ServerConfig,
    server: AbstractContextManager[tuple[str, int]],
    endpoints: Callable[[str], list[Endpoint]],
    args: argparse.Namespace,
) -> ConfigResult:
    """Start one server config, get its (verified) endpoints, measure each; then its RSS."""
    load_average = os.getloadavg()[0]
    print(f"== {config.server} {config.label} (1-min load average {load_average:.2f})", flush=True)
    with server as (base_url, root_pid):
        runs = [run for e in endpoints(base_url) for run in measure_endpoint(e, args)]
        rss = memory(config.server, root_pid)
    return ConfigResult(config, runs, rss, load_average)


# --------------------------------------------------------------------------- the two servers


@dataclass
class Bench:
    """State of one benchmark run: setup, answers seen so far, correctness lines, results."""

    args: argparse.Namespace
    setup: Setup
    mlserver_exe: Path
    tmp: Path
    checks: list[str] = dataclasses.field(default_factory=list)
    answers: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    results: list[ConfigResult] = dataclasses.field(default_factory=list)

    @property
    def theirs_rest(self) -> bytes:
        return v2_request_body([self.setup.row], INPUT, THEIRS_OUTPUT)

    @property
    def ours_rest(self) -> bytes:
        return v2_request_body([self.setup.row], INPUT, OURS_OUTPUT)

    def mlserver(self, parallel_workers: int) -> None:
        """Verify and measure MLServer (compiled scorer) with `parallel_workers`."""
        label = f"compiled scorer, parallel_workers={parallel_workers}"
        config = ServerConfig(MLSERVER, label, parallel_workers, SCORER)
        workdir = self.tmp / f"mlserver-{parallel_workers}"
        frame = grpc_request_frame(self.setup.row, THEIRS_OUTPUT)

        def endpoints(base_url: str) -> list[Endpoint]:
            settings = settings_of(workdir)
            port, metrics = settings["grpc_port"], settings["metrics_port"]
            metrics_url = f"http://127.0.0.1:{metrics}/metrics"
            got = {
                GRPC: grpc_proba(grpc_infer(port, frame), THEIRS_OUTPUT),
                V2_REST: rest_proba(base_url + V2_INFER, self.theirs_rest, THEIRS_OUTPUT),
            }
            for transport, proba in got.items():
                name = f"MLServer {label} {transport}"
                self.checks.append(check(name, proba, self.setup.reference_proba, "local pipeline"))
                self.answers[f"MLServer {transport}"] = proba
            return [
                Endpoint(
                    GRPC,
                    f"http://127.0.0.1:{port}{MODEL_INFER}",
                    frame,
                    lambda: mlserver_grpc_calls(metrics_url),
                ),
                Endpoint(V2_REST, base_url + V2_INFER, self.theirs_rest),
            ]

        server = serve_mlserver_pid(self.setup, config, self.mlserver_exe, workdir)
        self.results.append(measure_server(config, server, endpoints, self.args))

    def medserve(self) -> None:
        """Verify medserve's three transports against MLServer's answers, then measure them."""
        config = ServerConfig(MEDSERVE, f"bentoml serve, workers={self.args.workers}")
        grpc_port = free_port()
        frame = grpc_request_frame(self.setup.row, OURS_OUTPUT)
        token = bench_token()
        http, h2 = auth_headers(token), h2load_headers(token)

        def endpoints(base_url: str) -> list[Endpoint]:
            reply = grpc_infer(grpc_port, frame, metadata=grpc_metadata(token))
            got = {
                GRPC: grpc_proba(reply, OURS_OUTPUT),
                V2_REST: rest_proba(base_url + V2_INFER, self.ours_rest, OURS_OUTPUT, http),
                NATIVE: medserve_proba(base_url, self.setup, http),
            }
            for transport, proba in got.items():
                for peer, theirs in self.answers.items():
                    self.checks.append(check(f"medserve {transport}", proba, theirs, peer))
            return [
                Endpoint(
                    GRPC,
                    f"http://127.0.0.1:{grpc_port}{MODEL_INFER}",
                    frame,
                    lambda: medserve_grpc_calls(base_url),
                    h2_headers=h2,
                ),
                Endpoint(
                    GRPC_STREAM,
                    f"http://127.0.0.1:{grpc_port}{MODEL_STREAM_INFER}",
                    frame,
                    lambda: medserve_grpc_calls(base_url, "grpc_stream"),
                    stream_connections=self.args.stream_connections,
                    h2_headers=h2,
                ),
                Endpoint(V2_REST, base_url + V2_INFER, self.ours_rest, http_headers=http),
                Endpoint(
                    NATIVE, f"{base_url}/predict", self.setup.medserve_body, http_headers=http
                ),
            ]

        server = serve_medserve(
            self.setup.tag, self.args.workers, self.tmp / "medserve", grpc_port=grpc_port
        )
        self.results.append(measure_server(config, server, endpoints, self.args))


# --------------------------------------------------------------------------- reporting


def results_table(results: list[ConfigResult]) -> str:
    rows = [
        {
            "server": r.config.server,
            "transport": run.transport,
            "config": r.config.label,
            "connections": run.load.connections,
            "req/s": round(run.load.rps),
            "p50 ms": run.load.p50_ms,
            "p99 ms": run.load.p99_ms,
            "errors": run.load.errors,
            "client CPU s": run.load.client_cpu_seconds,
        }
        for r in results
        for run in r.runs
    ]
    return markdown_table(rows)


def _failed(calls: ServerCalls) -> str:
    return ", ".join(f"{k}: {v}" for k, v in calls.failed.items()) or "0"


def grpc_accounting_table(results: list[ConfigResult]) -> str:
    """h2load's view of each gRPC run next to the server's own count of calls."""
    rows = []
    for r in results:
        for run in r.runs:
            if run.server is None or run.window is None or run.h2load_done is None:
                continue
            rows.append(
                {
                    "server": r.config.server,
                    "config": r.config.label,
                    "connections": run.load.connections,
                    "h2load done": run.h2load_done,
                    "h2load 2xx": run.load.requests,
                    "server OK": run.server.ok,
                    "server failed": _failed(run.server),
                    "server unfinished": run.server.unfinished,
                    "server - h2load (in flight at stop)": run.server.total - run.h2load_done,
                    "failed inside the run": _failed(run.window),
                }
            )
    return markdown_table(rows)


def ratio_rows(results: list[ConfigResult]) -> list[dict[str, Any]]:
    """medserve vs MLServer's best config on the same transport, per connection count."""
    ours = next(r for r in results if r.config.server == MEDSERVE)
    peers = [r for r in results if r.config.server == MLSERVER]
    rows = []
    for mine in ours.runs:
        peer_transport = PEER_TRANSPORT[mine.transport]
        candidates = [
            (r.config.label, run.load)
            for r in peers
            for run in r.runs
            if run.transport == peer_transport and run.load.connections == mine.load.connections
        ]
        label, theirs = max(candidates, key=lambda c: c[1].rps)
        rps_ratio = mine.load.rps / theirs.rps
        p99_ratio = mine.load.p99_ms / theirs.p99_ms
        target = RPS_TARGETS[mine.transport]
        met = rps_ratio >= target and (mine.transport not in P99_NO_WORSE or p99_ratio <= 1.0)
        rows.append(
            {
                "medserve transport": mine.transport,
                "MLServer transport": peer_transport,
                "connections": mine.load.connections,
                "medserve req/s": round(mine.load.rps),
                "best MLServer config": label,
                "MLServer req/s": round(theirs.rps),
                "req/s ratio": rps_ratio,
                "medserve p99 ms": mine.load.p99_ms,
                "MLServer p99 ms": theirs.p99_ms,
                "p99 ratio": p99_ratio,
                "errors (medserve / MLServer)": f"{mine.load.errors} / {theirs.errors}",
                "req/s target": f">= {target:g}x",
                TARGET: "yes" if met else "**no**",
            }
        )
    return rows


def header_lines(bench: Bench, load: tuple[float, ...]) -> list[str]:
    args, setup = bench.args, bench.setup
    probe = "import importlib.metadata as m; print(m.version('grpcio'))"
    their_grpcio = subprocess.run(
        [bench.mlserver_exe.parent / "python", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    seconds = max(1, round(args.duration))
    return [
        *host_lines(bench.mlserver_exe, load),
        f"- gRPC stacks: medserve grpcio {importlib.metadata.version('grpcio')} (grpc.aio in "
        f"each BentoML worker, SO_REUSEPORT), MLServer grpcio {their_grpcio}; load generators "
        f"{h2load_version()} and {wrk_version()}",
        f"- model: {setup.tag}, compiled `scorer.json` (LinearScorer) in both servers; MLServer "
        f"runs it through `{SCORER_RUNTIME}`; the row is "
        "`to_matrix([VALID_PATIENT])`",
        f"- medserve: one `bentoml serve {SERVICE_TARGET}`, MEDSERVE_WORKERS={args.workers}, "
        f"serving gRPC, v2 REST and native `POST /predict` "
        f'(`{{"patients": [VALID_PATIENT]}}`, {len(setup.medserve_body)} B)',
        f"- medserve access control: {access_line()}; MLServer's requests carry no token (it has"
        " no access control)",
        f"- MLServer {', '.join(f'parallel_workers={w}' for w in args.mlserver_workers)} "
        "(one server at a time)",
        f"- requests: v2 REST = JSON FP64 `{INPUT}` [1, 13] asking for one output "
        f"(medserve `{OURS_OUTPUT}`, MLServer `{THEIRS_OUTPUT}`; "
        f"{len(bench.ours_rest)} / {len(bench.theirs_rest)} B); gRPC = "
        f"`{MODEL_INFER}`, the same tensor in `raw_input_contents` "
        f"({len(grpc_request_frame(setup.row, OURS_OUTPUT))} / "
        f"{len(grpc_request_frame(setup.row, THEIRS_OUTPUT))} B framed)",
        f"- load: closed loop, {WARMUP_S:g} s warm-up per transport, then {seconds} s per "
        f"connection count; HTTP with wrk ({args.client_threads} thread(s), keep-alive), gRPC "
        f"with h2load over h2c ({args.client_threads} thread(s), `-m 1` = one stream per "
        "connection, p50/p99 from its per-request log); client CPU = the load generator's "
        "user+sys seconds (os.wait4)",
        "- gRPC errors = h2load's failed/errored/timed-out requests + the failures the server "
        "counted inside the run (h2load only sees HTTP 200: `grpc-status` is a trailer), between "
        f"two metric reads {EDGE_S:g} s after h2load starts and {EDGE_S:g} s before it stops: "
        'medserve `medserve_request_duration_seconds_count{api="grpc",outcome!="ok"}`;'
        ' MLServer `grpc_server_handled_total{grpc_method="ModelInfer",grpc_code!="OK"}` '
        "(py-grpc-prometheus) + `model_infer_request_failure_total` (calls MLServer aborts never "
        "reach handled_total)",
        f"- gRPC stream = `{MODEL_STREAM_INFER}` (Triton's bidirectional stream) over "
        f"{args.stream_connections} h2load connections; at concurrency k each stream carries "
        f"k / {args.stream_connections} framed requests sent at once and ends with their "
        "answers; req/s counts answered requests, p50/p99 are per stream (until its last "
        "answer); set against MLServer's best unary gRPC (see PEER_TRANSPORT)",
    ]


def access_line() -> str:
    """How the medserve requests of this run authenticate (MEDSERVE_AUTH_MODE of the env)."""
    token = bench_token()
    if token is None:
        return "OFF (MEDSERVE_AUTH_MODE=off), no token sent"
    return (
        "MEDSERVE_AUTH_MODE=local, every request carries a bearer token (Ed25519, the isolated "
        f"home's local key, {len(token)} characters): HTTP `Authorization` header (wrk, "
        "urllib), gRPC `authorization` metadata (h2load `-H`, grpcio); gRPC calls the access "
        "check refuses count as errors (`medserve_rejected_requests_total`)"
    )


def report(bench: Bench, header: list[str]) -> str:
    rows = ratio_rows(bench.results)
    met = sum(1 for row in rows if row[TARGET] == "yes")
    rss = [Measurement(r.config, [], r.rss, r.load_average) for r in bench.results]
    return "\n".join(
        [
            "# OIP v2 serving: medserve vs MLServer 1.7.1 (gRPC, v2 REST, native HTTP)",
            "",
            *header,
            "",
            f"## Correctness check (before measuring, tolerance {TOLERANCE:g})",
            "",
            *(f"- `{line}`" for line in bench.checks),
            "",
            "## Throughput and latency",
            "",
            results_table(bench.results),
            "",
            "1-min load average just before each server started:",
            "",
            *(f"- {r.config.server} {r.config.label}: {r.load_average:.2f}" for r in bench.results),
            "",
            "## gRPC calls: h2load vs the server's own metrics",
            "",
            grpc_accounting_table(bench.results),
            "",
            "Whole run = settled metric reads before and after h2load. When h2load stops it resets"
            " the calls in flight (up to `connections`): h2load no longer counts them, the server"
            " still answers some (so server OK > h2load done) and counts the others as failed or"
            " never finishes them (MLServer: started, never handled = unfinished; medserve: the"
            " cancellation is counted as `overloaded`, BentoML's CorkDispatcher turns"
            " CancelledError into its fallback). The errors in the tables above are only those"
            " inside the run.",
            "",
            "## medserve / MLServer's best config on the same transport",
            "",
            "MLServer has no native API: medserve's `/predict` is set against MLServer's v2 REST.",
            "",
            markdown_table(rows),
            "",
            f"Target met in {met} of {len(rows)} rows.",
            "",
            "## Resident memory after the load",
            "",
            rss_table(rss),
            "",
        ]
    )


# --------------------------------------------------------------------------- main


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per load run (at least 2)"
    )
    parser.add_argument("--connections", type=_ints, default=[16, 64], help="e.g. 16,64")
    parser.add_argument(
        "--mlserver-workers", type=_ints, default=[0, 2], help="MLServer parallel_workers, e.g. 0,2"
    )
    parser.add_argument(
        "--client-threads", type=int, default=1, help="wrk and h2load threads (default 1)"
    )
    parser.add_argument("--workers", type=int, default=2, help="medserve MEDSERVE_WORKERS")
    parser.add_argument(
        "--stream-connections",
        type=int,
        default=4,
        help="h2load connections for gRPC streams (>= workers, so every worker gets streams)",
    )
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, homes)")
    args = parser.parse_args(argv)
    if args.duration < 2:
        parser.error("--duration must be at least 2 s")
    return args


def run(args: argparse.Namespace, tmp: Path) -> str:
    """The whole benchmark inside the temp dir `tmp`; return the markdown report."""
    load = os.getloadavg()
    isolate_homes(tmp)
    print(f"training the heart model into {tmp} ...", flush=True)
    bench = Bench(args, prepare_model(), ensure_mlserver_venv(DEFAULT_ROOT), tmp)
    header = header_lines(bench, load)
    for parallel_workers in args.mlserver_workers:
        bench.mlserver(parallel_workers)
    bench.medserve()
    return report(bench, header)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with temp_dir("oip-serving-bench-", args.keep) as tmp:
        text = run(args, tmp)
    publish(text, args.out)


if __name__ == "__main__":
    main()
