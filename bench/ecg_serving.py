"""ECG anomaly service under concurrent load vs the raw Keras autoencoder in-process, one run.

Usage: ``uv run python -m bench.ecg_serving [--quick] [--duration 10] [--connections 16 64]
[--beats-per-request 16] [--workers 2] [--raw-seconds 1] [--out FILE] [--keep]``.

One run trains the ECG model (``training.ecg_anomaly.train``; ``--quick``: a small model for
smoke runs) into a throw-away MEDSERVE_HOME/BENTOML_HOME, then, never both at once:

1. times the stored ``autoencoder.keras`` in this process (TensorFlow backend) on normalised
   batches of 16 to 1024 beats: ``model(x, training=False)`` and ``model.predict_on_batch(x)``,
   and for reference the NumPy ``BeatScorer`` the service really runs (raw beats in);
2. starts ``bentoml serve bentos.ecg_anomaly:EcgAnomaly`` (cold start = process start until
   ``/readyz`` answers 200), checks one answer per request size and API against the NumPy
   scorer, and drives each API per beats-per-request and connection count: the JSON
   ``POST /predict`` and the v2 REST binary extension with wrk, v2 gRPC (``raw_input_contents``)
   with h2load; the service's own metrics give the mean adaptive batch of every run; then the
   workers' resident memory;
3. times Keras ``predict_on_batch`` again at each run's mean adaptive batch (service stopped).

Every request to the service carries the bench's bearer token (``bench.access``): the HTTP
``Authorization`` header (wrk, urllib), the gRPC ``authorization`` metadata (h2load, grpcio).

Target (issue 16): over binary v2 (REST and gRPC), service beats/s >= 25 % of raw Keras
``predict_on_batch`` beats/s at the service's mean batch size, every beat durably logged before
its answer, zero errors; the JSON API is reported beside it. Also worker RSS (< 1 GiB), cold start.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.access import auth_headers, bench_token
from bench.h2load import GRPC_HEADERS, grpc_frame, h2load_version, run_h2load, warmup_h2load
from bench.heart_serving import (
    JSON,
    MEDSERVE,
    WARMUP_S,
    Measurement,
    ProcessRss,
    ServerConfig,
    free_port,
    isolate_homes,
    machine_line,
    memory,
    post_json,
    publish,
    rss_table,
    serve_medserve,
    temp_dir,
)
from bench.inprocess import RawResult, batches_during, metric_sum, time_calls
from bench.loadgen import LoadResult, markdown_table, require, run_wrk, warmup, wrk_version
from medserve.catalogue import SERVICES

MODEL = "ecg_anomaly"
TARGET = SERVICES[MODEL].target
MODEL_ENV = "MEDSERVE_ECG_ANOMALY_MODEL_TAG"
RAW_BATCHES = (16, 64, 256, 1024)
QUICK = {"normal_beats": 600, "abnormal_beats_per_class": 90, "epochs": 5}
ABNORMAL_EVERY = 4  # every 4th beat of a request body is abnormal (25 %)
WIRE_DECIMALS = 5  # beats go over the wire rounded to 10 nV (mV units), like the answers
MAE_TOLERANCE = 1e-4
RATIO_TARGET = 0.25  # binary v2 beats/s / Keras predict_on_batch beats/s at the mean batch
OCTET_STREAM = "application/octet-stream"
BINARY_HEADER = "Inference-Header-Content-Length"  # the OIP binary tensor extension's
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
JSON_API = "JSON /predict"
REST_BINARY = "v2 REST binary"
GRPC_RAW = "v2 gRPC raw"
BINARY_APIS = (REST_BINARY, GRPC_RAW)
RSS_TARGET_MIB = 1024.0  # per worker
KERAS_CALL = "Keras `model(x, training=False)`"
KERAS_PREDICT = "Keras `predict_on_batch(x)`"
NUMPY_SCORER = "NumPy `BeatScorer.score` (raw beats, as served)"


@dataclass(frozen=True, slots=True)
class Setup:
    """The trained model and the test beats request bodies are made of."""

    tag: str
    folder: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    data_s: float
    train_s: float
    normal: np.ndarray  # test-split normal beats, float32 [n, 140]
    abnormal: np.ndarray  # test-split abnormal beats, shuffled over the classes
    scorer: Any  # medserve.ecg.autoencoder.BeatScorer


@dataclass(frozen=True, slots=True)
class WireRequest:
    """One request body of one API, as its load generator sends it; `headers` besides the
    content type (the bearer token, the binary extension's header), as gRPC metadata for gRPC."""

    api: str
    url: str
    body: bytes
    content_type: str = JSON
    headers: dict[str, str] | None = None

    @property
    def grpc(self) -> bool:
        return self.api == GRPC_RAW

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """`headers` as gRPC metadata (lower-case keys)."""
        return tuple((k.lower(), v) for k, v in (self.headers or {}).items())

    @property
    def h2load_headers(self) -> tuple[str, ...]:
        """h2load `-H` lines of the gRPC call: content type, te, then `metadata`."""
        return (*GRPC_HEADERS, *(f"{k}: {v}" for k, v in self.metadata))


@dataclass(frozen=True, slots=True)
class ServiceRun:
    """One load run and the service's adaptive batches during it."""

    api: str
    beats_per_request: int
    load: LoadResult
    mean_batch: float
    inference_ms: float

    @property
    def beats_per_s(self) -> float:
        return self.load.rps * self.beats_per_request


@dataclass(frozen=True, slots=True)
class ServiceResult:
    """Cold start, checks, load runs and memory of one `bentoml serve`."""

    cold_start_s: float
    first_predict_ms: float
    checks: list[str]
    bodies: dict[tuple[str, int], int]  # (API, beats per request) -> body bytes
    runs: list[ServiceRun]
    rss: list[ProcessRss]
    load_average: float


# --------------------------------------------------------------------------- model and beats


def train_config(quick: bool) -> Any:
    """The training config: the defaults (full size), or the small `QUICK` one."""
    from training.ecg_anomaly import EcgTrainConfig

    return EcgTrainConfig(**QUICK) if quick else EcgTrainConfig()


def prepare_model(quick: bool) -> Setup:
    """Generate the synthetic beats, train and store the model; keep its test beats."""
    from medserve.ecg.autoencoder import BeatScorer
    from medserve.model_store import model_folder
    from training.ecg_anomaly import split_by_record, train, training_beats

    config = train_config(quick)
    started = time.perf_counter()
    beats = training_beats(config)  # cached: train() reads the same beats again
    data_s = time.perf_counter() - started
    started = time.perf_counter()
    result = train(config)
    train_s = time.perf_counter() - started
    folder = model_folder(result.tag)
    _, test = split_by_record(beats, config.test_size, config.seed)
    abnormal = test.beats[test.is_anomalous]
    abnormal = abnormal[np.random.default_rng(0).permutation(len(abnormal))]
    return Setup(
        tag=result.tag,
        folder=folder,
        config=config.model_dump(mode="json", exclude_none=True),
        metrics=result.metrics,
        data_s=data_s,
        train_s=train_s,
        normal=test.beats[~test.is_anomalous],
        abnormal=abnormal,
        scorer=BeatScorer.load(folder),
    )


def beats_for(setup: Setup, n: int) -> np.ndarray:
    """`n` test beats [n, 140], every ABNORMAL_EVERY-th one abnormal, as sent on the wire."""
    rows, normal, abnormal = [], 0, 0
    for i in range(n):
        if i % ABNORMAL_EVERY == ABNORMAL_EVERY - 1:
            rows.append(setup.abnormal[abnormal % len(setup.abnormal)])
            abnormal += 1
        else:
            rows.append(setup.normal[normal % len(setup.normal)])
            normal += 1
    return np.round(np.asarray(rows, dtype=np.float64), WIRE_DECIMALS).astype(np.float32)


def request_body(beats: np.ndarray) -> bytes:
    """The `/predict` body for `beats` (from `beats_for`: parsing it gives `beats` back)."""
    rounded = np.round(beats.astype(np.float64), WIRE_DECIMALS)
    return json.dumps({"beats": rounded.tolist()}).encode()


# --------------------------------------------------------------------------- raw model


def measure_raw(setup: Setup, seconds: float) -> tuple[list[RawResult], str]:
    """Keras (both call styles) and the NumPy scorer per batch size; a Keras-vs-NumPy check."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from medserve.ecg.model import KERAS_FILE

    model = keras.models.load_model(setup.folder / KERAS_FILE, compile=False)
    params = setup.scorer.params

    def call(x: np.ndarray) -> np.ndarray:
        return np.asarray(model(x, training=False))

    runners: dict[str, tuple[Callable[[np.ndarray], Any], bool]] = {
        KERAS_CALL: (call, True),
        KERAS_PREDICT: (model.predict_on_batch, True),
        NUMPY_SCORER: (setup.scorer.score, False),
    }
    results = []
    for batch in RAW_BATCHES:
        beats = beats_for(setup, batch)
        normalised = params.normalise(beats)
        for runner, (fn, wants_normalised) in runners.items():
            timed = time_calls(fn, normalised if wants_normalised else beats, seconds, runner)
            results.append(timed)
            print(
                f"   {runner} batch {batch}: {timed.rows_per_s:,.0f} beats/s "
                f"({timed.mean_ms:.3f} ms/call)",
                flush=True,
            )
    normalised = params.normalise(beats_for(setup, max(RAW_BATCHES)))
    gap = float(np.max(np.abs(call(normalised) - setup.scorer.reconstruct(normalised))))
    check = (
        f"{'OK ' if gap <= MAE_TOLERANCE else 'FAIL'} Keras vs NumPy reconstruction of "
        f"{max(RAW_BATCHES)} beats: max|diff| {gap:.2e} (tolerance {MAE_TOLERANCE:g})"
    )
    require(gap <= MAE_TOLERANCE, check)
    return results, check


# --------------------------------------------------------------------------- service


def wire_requests(
    base_url: str, grpc_port: int, beats: np.ndarray, token: str | None = None
) -> list[WireRequest]:
    """The same beats as a JSON body, a v2 REST binary body and a framed gRPC request, each
    carrying `token` (None: none)."""
    auth = auth_headers(token)
    raw = np.ascontiguousarray(beats, dtype="<f4").tobytes()
    outputs = ("reconstruction", "mae", "anomalous", "threshold", "prediction_id")
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "beats",
                    "shape": list(beats.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": o, "parameters": {"binary_data": True}} for o in outputs],
        }
    ).encode()
    from tritonclient.grpc import service_pb2

    message = service_pb2.ModelInferRequest(model_name=MODEL)
    tensor = message.inputs.add()
    tensor.name, tensor.datatype = "beats", "FP32"
    tensor.shape.extend(beats.shape)
    message.raw_input_contents.append(raw)
    return [
        WireRequest(JSON_API, f"{base_url}/predict", request_body(beats), headers=auth),
        WireRequest(
            REST_BINARY,
            f"{base_url}/v2/models/{MODEL}/infer",
            header + raw,
            OCTET_STREAM,
            {BINARY_HEADER: str(len(header)), **auth},
        ),
        WireRequest(
            GRPC_RAW,
            f"http://127.0.0.1:{grpc_port}{MODEL_INFER}",
            grpc_frame(message.SerializeToString()),
            headers=auth,
        ),
    ]


def answered_mae(request: WireRequest, grpc_port: int) -> tuple[np.ndarray, list[bool]]:
    """(MAE per beat, anomalous flags) of one answer to `request`, decoded from its API."""
    if request.grpc:
        import tritonclient.grpc as tgrpc
        from tritonclient.grpc import service_pb2

        client = tgrpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        message = service_pb2.ModelInferRequest.FromString(request.body[5:])
        response = client._client_stub.ModelInfer(message, metadata=request.metadata or None)
        names = [o.name for o in response.outputs]
        mae = np.frombuffer(response.raw_output_contents[names.index("mae")], "<f4")
        flags = np.frombuffer(response.raw_output_contents[names.index("anomalous")], np.bool_)
        return mae.astype(np.float64), flags.tolist()
    if request.api == REST_BINARY:
        import urllib.request

        http = urllib.request.Request(
            request.url,
            data=request.body,
            headers={"Content-Type": OCTET_STREAM, **(request.headers or {})},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(http, timeout=30) as response:
            length = int(response.headers[BINARY_HEADER])
            content = response.read()
        described = json.loads(content[:length])["outputs"]
        blobs, offset = {}, length
        for output in described:
            size = output["parameters"]["binary_data_size"]
            blobs[output["name"]] = content[offset : offset + size]
            offset += size
        mae = np.frombuffer(blobs["mae"], "<f4").astype(np.float64)
        return mae, np.frombuffer(blobs["anomalous"], np.bool_).tolist()
    predictions = post_json(request.url, request.body, headers=request.headers)["predictions"]
    return (
        np.asarray([p["mae"] for p in predictions], dtype=np.float64),
        [bool(p["anomalous"]) for p in predictions],
    )


def check_answer(
    request: WireRequest, grpc_port: int, setup: Setup, beats: np.ndarray
) -> tuple[str, float]:
    """Send `request` once; its flags and MAEs must equal the NumPy scorer's. (line, ms)."""
    started = time.perf_counter()
    got_mae, got_flags = answered_mae(request, grpc_port)
    latency_ms = (time.perf_counter() - started) * 1e3
    _, mae = setup.scorer.score(beats)
    want_flags = (mae > setup.scorer.params.threshold).tolist()
    gap = float(np.max(np.abs(got_mae - mae))) if len(got_mae) == len(mae) else float("inf")
    ok = gap <= MAE_TOLERANCE and got_flags == want_flags
    line = (
        f"{'OK ' if ok else 'FAIL'} {request.api} with {len(beats)} beat(s): {sum(got_flags)} "
        f"flagged (NumPy scorer: {sum(want_flags)}), max|MAE diff| {gap:.2e} (tolerance "
        f"{MAE_TOLERANCE:g})"
    )
    require(ok, line)
    return line, latency_ms


def failed_grpc_calls(base_url: str) -> float:
    """gRPC calls the service answered with an error so far (h2load cannot see grpc-status),
    with the calls its access check refused (counted as rejected requests, not per API: only
    one API is loaded at a time)."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{base_url}/metrics", timeout=30) as response:
        text = response.read().decode()
    total = metric_sum(text, "medserve_request_duration_seconds_count", model=MODEL, api="grpc")
    ok = metric_sum(
        text, "medserve_request_duration_seconds_count", model=MODEL, api="grpc", outcome="ok"
    )
    refused = sum(
        metric_sum(text, "medserve_rejected_requests_total", model=MODEL, reason=reason)
        for reason in ("unauthenticated", "forbidden")
    )
    return total - ok + refused


def load_run(
    base_url: str, request: WireRequest, beats_per_request: int, connections: int, duration_s: float
) -> ServiceRun:
    """One closed-loop run of one API; the mean adaptive batch and model time per batch."""

    def drive() -> LoadResult:
        if request.grpc:
            failed = failed_grpc_calls(base_url)
            load = run_h2load(
                request.url, request.body, connections, duration_s, headers=request.h2load_headers
            ).load
            extra = int(failed_grpc_calls(base_url) - failed)
            return dataclasses.replace(load, errors=load.errors + extra)
        return run_wrk(
            request.url,
            request.body,
            request.content_type,
            connections,
            duration_s,
            headers=request.headers,
        )

    load, batches = batches_during(base_url, MODEL, drive)
    run = ServiceRun(request.api, beats_per_request, load, batches.mean_batch, batches.inference_ms)
    print(
        f"   {request.api}, {beats_per_request} beat(s)/request, c={connections}: "
        f"{load.rps:,.0f} req/s = {run.beats_per_s:,.0f} beats/s, p50 {load.p50_ms:.2f} ms, "
        f"p99 {load.p99_ms:.2f} ms, errors {load.errors}, mean batch {run.mean_batch:.1f} beats",
        flush=True,
    )
    return run


def measure_service(setup: Setup, args: argparse.Namespace, tmp: Path) -> ServiceResult:
    """Start the service (timing its cold start), check, load it, read its memory."""
    load_average = os.getloadavg()[0]
    print(f"== bentoml serve {TARGET} (1-min load average {load_average:.2f})", flush=True)
    checks: list[str] = []
    bodies: dict[tuple[str, int], int] = {}
    runs: list[ServiceRun] = []
    grpc_port = free_port()
    token = bench_token()
    started = time.perf_counter()
    with serve_medserve(
        setup.tag,
        args.workers,
        tmp / "medserve",
        target=TARGET,
        model_env=MODEL_ENV,
        grpc_port=grpc_port,
    ) as (base_url, root_pid):
        cold_start_s = time.perf_counter() - started
        print(f"   ready after {cold_start_s:.2f} s", flush=True)
        first_predict_ms = 0.0
        for n in args.beats_per_request:
            beats = beats_for(setup, n)
            for request in wire_requests(base_url, grpc_port, beats, token):
                bodies[(request.api, n)] = len(request.body)
                line, latency_ms = check_answer(request, grpc_port, setup, beats)
                checks.append(line)
                first_predict_ms = first_predict_ms or latency_ms
                if request.grpc:
                    warmup_h2load(request.url, request.body, WARMUP_S, request.h2load_headers)
                else:
                    warmup(
                        request.url, request.body, request.content_type, WARMUP_S, request.headers
                    )
                for connections in args.connections:
                    runs.append(load_run(base_url, request, n, connections, args.duration))
        rss = memory(MEDSERVE, root_pid)
    return ServiceResult(cold_start_s, first_predict_ms, checks, bodies, runs, rss, load_average)


def keras_at_mean_batches(
    setup: Setup, runs: list[ServiceRun], seconds: float
) -> dict[int, RawResult]:
    """Keras `predict_on_batch` beats/s at each run's mean adaptive batch (rounded)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from medserve.ecg.model import KERAS_FILE

    model = keras.models.load_model(setup.folder / KERAS_FILE, compile=False)
    sizes = sorted({max(1, round(run.mean_batch)) for run in runs})
    results = {}
    for size in sizes:
        normalised = setup.scorer.params.normalise(beats_for(setup, size))
        results[size] = time_calls(model.predict_on_batch, normalised, seconds, KERAS_PREDICT)
        print(f"   Keras predict_on_batch at batch {size}: {results[size].rows_per_s:,.0f} beats/s")
    return results


# --------------------------------------------------------------------------- reporting


def best_raw(raw: list[RawResult], batch: int | None = None) -> RawResult:
    """The Keras result (either call style) with the most beats/s, optionally at one batch."""
    keras_runs = [r for r in raw if r.runner in (KERAS_CALL, KERAS_PREDICT)]
    return max(
        (r for r in keras_runs if batch is None or r.batch == batch), key=lambda r: r.rows_per_s
    )


def raw_table(raw: list[RawResult]) -> str:
    return markdown_table(
        [
            {
                "runner": r.runner,
                "batch (beats)": r.batch,
                "calls": r.calls,
                "mean ms/call": round(r.mean_ms, 3),
                "p99 ms/call": round(r.p99_ms, 3),
                "beats/s": round(r.rows_per_s),
            }
            for r in raw
        ]
    )


def service_table(service: ServiceResult, at_batch: dict[int, RawResult]) -> str:
    rows = []
    for run in service.runs:
        keras_rate = keras_for(run, at_batch).rows_per_s
        rows.append(
            {
                "API": run.api,
                "beats/request": run.beats_per_request,
                "connections": run.load.connections,
                "req/s": round(run.load.rps),
                "beats/s": round(run.beats_per_s),
                "p50 ms": run.load.p50_ms,
                "p99 ms": run.load.p99_ms,
                "errors": run.load.errors,
                "mean adaptive batch (beats)": round(run.mean_batch, 1),
                "model ms/batch": round(run.inference_ms, 3),
                "Keras predict_on_batch beats/s at that batch": round(keras_rate),
                "÷ Keras at that batch": f"{run.beats_per_s / keras_rate:.1%}",
                "client CPU s": run.load.client_cpu_seconds,
            }
        )
    return markdown_table(rows)


def keras_for(run: ServiceRun, at_batch: dict[int, RawResult]) -> RawResult:
    return at_batch[max(1, round(run.mean_batch))]


def target_rows(service: ServiceResult, at_batch: dict[int, RawResult]) -> list[dict]:
    """Each binary-v2 run against Keras `predict_on_batch` at its own mean adaptive batch."""
    rows = []
    for run in service.runs:
        if run.api not in BINARY_APIS:
            continue
        keras_run = keras_for(run, at_batch)
        ratio = run.beats_per_s / keras_run.rows_per_s
        met = ratio >= RATIO_TARGET and run.load.errors == 0
        rows.append(
            {
                "API": run.api,
                "beats/request": run.beats_per_request,
                "connections": run.load.connections,
                "service beats/s": round(run.beats_per_s),
                "mean batch": round(run.mean_batch, 1),
                "Keras beats/s at it": round(keras_run.rows_per_s),
                "ratio": f"{ratio:.1%}",
                "p99 ms": run.load.p99_ms,
                "errors": run.load.errors,
                f"target met (>= {RATIO_TARGET:.0%}, 0 errors)": "yes" if met else "**no**",
            }
        )
    return rows


def header_lines(
    setup: Setup,
    service: ServiceResult,
    args: argparse.Namespace,
    load: tuple[float, ...],
    settings: Any,
) -> list[str]:
    """Date, machine, versions, model, service and load settings as markdown bullets."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}"
        for name in ("bentoml", "keras", "tensorflow", "numpy")
    )
    c, m = setup.config, setup.metrics
    headline = ", ".join(
        f"{k} {m[k]:.4f}"
        for k in ("roc_auc", "recall", "precision", "f1", "false_positive_rate", "threshold")
        if isinstance(m.get(k), float)
    )
    size = "`--quick`" if args.quick else "full size (`EcgTrainConfig()` defaults)"
    seconds = max(1, round(args.duration))
    return [
        f"- date: {now}",
        machine_line(load),
        f"- versions: Python {platform.python_version()}, {versions}; {wrk_version()}",
        f"- model: {setup.tag}, {size}: {c['normal_beats']} normal synthetic beats + "
        f"{c['abnormal_beats_per_class']} per abnormal class, {c['epochs']} epochs, batch "
        f"{c['batch_size']}; beat generation {setup.data_s:.1f} s, training (fit, threshold, "
        f"evaluation, store) {setup.train_s:.1f} s",
        f"- test-split metrics: {headline}; n_train {m['n_train']}, n_test {m['n_test']}",
        f"- raw model: `autoencoder.keras` loaded with keras in this process (TensorFlow "
        f"backend, {len(os.sched_getaffinity(0))} cores, default thread pools), normalised "
        f"float32 batches, {args.raw_seconds:g} s per runner and batch size after 10 warm-up "
        "calls; measured before the service started",
        f"- service: `bentoml serve {TARGET}`, MEDSERVE_WORKERS={args.workers}, "
        f"max_batch_size {settings.max_batch_size} beats, max_latency_ms "
        f"{settings.max_latency_ms}, prediction_log_wait {settings.prediction_log_wait}",
        "- access control: "
        + (
            "MEDSERVE_AUTH_MODE=local, every request carries a bearer token (Ed25519, the isolated"
            " home's local key): HTTP `Authorization` header, gRPC `authorization` metadata"
            if bench_token()
            else "OFF (MEDSERVE_AUTH_MODE=off), no token sent"
        ),
        f"- requests: test-split beats, every {ABNORMAL_EVERY}th abnormal; {JSON_API} "
        f'`{{"beats": [[140 floats], ...]}}` ({WIRE_DECIMALS} decimals), {REST_BINARY} (FP32 '
        f"`beats` and every output in the binary extension), {GRPC_RAW} (FP32 `beats` in "
        "`raw_input_contents`, raw outputs); body sizes "
        + ", ".join(f"{api} {n} beat(s) {b:,} B" for (api, n), b in service.bodies.items()),
        f"- load: closed loop, {WARMUP_S:g} s warm-up per API and request size, then {seconds} "
        f"s per connection count: HTTP with wrk (1 thread, keep-alive; {wrk_version()}), gRPC "
        f"with h2load over h2c (`-m 1`; {h2load_version()}, failed calls read from the "
        "service's metrics); beats/s = req/s x beats per request; errors = non-2xx + socket "
        "errors + timeouts (+ failed gRPC calls); mean adaptive batch and model ms/batch from "
        "the service's `medserve_batch_size` and `medserve_inference_duration_seconds`",
    ]


def report(
    header: list[str],
    raw: list[RawResult],
    raw_check: str,
    service: ServiceResult,
    at_batch: dict[int, RawResult],
) -> str:
    best = best_raw(raw)
    numpy_best = max((r for r in raw if r.runner == NUMPY_SCORER), key=lambda r: r.rows_per_s)
    workers = [p for p in service.rss if p.role == "worker"]
    biggest = max((p.rss_mb for p in workers), default=0.0)
    rss_met = bool(workers) and biggest < RSS_TARGET_MIB
    rss = [Measurement(ServerConfig(MEDSERVE, TARGET), [], service.rss, service.load_average)]
    return "\n".join(
        [
            "# ECG anomaly serving: medserve under load vs the raw Keras model",
            "",
            *header,
            "",
            "## Correctness checks (before measuring)",
            "",
            f"- `{raw_check}`",
            *(f"- `{line}`" for line in service.checks),
            "",
            "## Raw model in this process (no server running)",
            "",
            raw_table(raw),
            "",
            f"Best raw Keras: {best.rows_per_s:,.0f} beats/s ({best.runner}, batch "
            f"{best.batch}). Best NumPy scorer (what each worker runs): "
            f"{numpy_best.rows_per_s:,.0f} beats/s (batch {numpy_best.batch}).",
            "",
            "## Service under load",
            "",
            f"1-min load average when the service started: {service.load_average:.2f}.",
            "",
            service_table(service, at_batch),
            "",
            f"## Target: binary v2 beats/s >= {RATIO_TARGET:.0%} of Keras `predict_on_batch` at "
            "the service's mean adaptive batch, zero errors",
            "",
            "Every beat is logged (group commit, the answer waits for it) before its answer.",
            "",
            markdown_table(target_rows(service, at_batch)),
            "",
            "## Worker memory after the load",
            "",
            rss_table(rss),
            "",
            f"Largest worker: {biggest:.0f} MiB; target < {RSS_TARGET_MIB:.0f} MiB per worker: "
            f"{'met' if rss_met else '**not met**'}.",
            "",
            "## Cold start",
            "",
            f"- process start to the first 200 from `/readyz`: {service.cold_start_s:.2f} s "
            "(polled every 0.25 s; the first worker that is ready answers)",
            f"- first `/predict` after that ({next(iter(service.bodies), 0)} beat(s)): "
            f"{service.first_predict_ms:.1f} ms",
            "",
        ]
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model, for smoke runs")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--beats-per-request", type=int, nargs="+", default=[16])
    parser.add_argument("--workers", type=int, default=2, help="MEDSERVE_WORKERS")
    parser.add_argument(
        "--raw-seconds", type=float, default=1.0, help="seconds per raw runner and batch size"
    )
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, homes)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, tmp: Path) -> str:
    """The whole benchmark inside the temp dir `tmp`; return the markdown report."""
    load = os.getloadavg()
    isolate_homes(tmp)
    from medserve.settings import get_settings

    print(f"training the ECG model into {tmp} ...", flush=True)
    setup = prepare_model(args.quick)
    print(
        f"   {setup.tag}: beats {setup.data_s:.1f} s, training {setup.train_s:.1f} s, "
        f"roc_auc {setup.metrics['roc_auc']:.4f}",
        flush=True,
    )
    print(f"== raw model in-process (1-min load average {os.getloadavg()[0]:.2f})", flush=True)
    raw, raw_check = measure_raw(setup, args.raw_seconds)
    service = measure_service(setup, args, tmp)
    print("== Keras predict_on_batch at the service's mean batches (service stopped)", flush=True)
    at_batch = keras_at_mean_batches(setup, service.runs, args.raw_seconds)
    settings = get_settings()
    header = header_lines(setup, service, args, load, settings)
    return report(header, raw, raw_check, service, at_batch)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with temp_dir("ecg-serving-bench-", args.keep) as tmp:
        text = run(args, tmp)
    publish(text, args.out)


if __name__ == "__main__":
    main()
