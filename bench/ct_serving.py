"""Lung CT service under concurrent load vs the raw model in-process (Keras and ONNX Runtime).

Usage: ``uv run python -m bench.ct_serving [--sizes 224 512] [--duration 10]
[--connections 8 32] [--workers 1] [--raw-seconds 2] [--alpha 1.0] [--out FILE] [--keep]``.

Per model input size, one run, never two things at once:

1. trains a MobileNetV2 (the issue's reference backbone; ``--alpha`` width) through
   ``training.ct_pattern.train`` on a small 512-px synthetic DICOM set for a few epochs: speed
   does not depend on how well the weights are trained, but the answers must depend on the
   input (checked: the spread of P(uip) over the slices), or the equality checks prove nothing;
   the stored model is a real one (Keras file, ONNX twin checked within 1e-3, drift reference);
2. times the stored model in this process on windowed [n, size, size, 1] batches of real slices:
   plain Keras ``predict_on_batch`` (the baseline) and ONNX Runtime (what the service runs), with
   the largest probability gap between the two;
3. starts ``bentoml serve bentos.ct_pattern:CtPattern`` (cold start = process start until
   ``/readyz`` answers 200), checks one answer against ONNX Runtime in-process, then drives
   ``POST /predict/image`` with a 512x512 12-bit DICOM body (what a scanner sends: the service
   parses it, rescales to HU, windows and resizes on every request) per connection count; the
   service's metrics give the mean adaptive batch; then the workers' resident memory. Every
   request carries the bench's bearer token (``bench.access``, ``Authorization`` header).

Also times, in this process, the whole path a slice takes without the server: the DICOM body
decoded, rescaled, windowed and resized, then the model (ONNX Runtime, one 1-thread call per
core at once, as the service runs it) - the "in-process pipeline".

Targets (issue 16): service images/s >= 85 % of the in-process pipeline's images/s on the same
cores; (issue 6) the faster runtime >= 2x plain Keras, within 1e-3 in probability; worker RSS
< 1.5 GB; cold start reported. The service / raw-model ratio is reported beside.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.access import auth_headers, bench_token
from bench.heart_serving import (
    MEDSERVE,
    WARMUP_S,
    Measurement,
    ProcessRss,
    ServerConfig,
    isolate_homes,
    machine_line,
    memory,
    post_json,
    publish,
    rss_table,
    serve_medserve,
    temp_dir,
)
from bench.inprocess import RawResult, batches_during, time_calls, time_concurrent
from bench.loadgen import LoadResult, markdown_table, require, run_wrk, warmup, wrk_version
from medserve.catalogue import SERVICES

MODEL = "ct_pattern"
TARGET = SERVICES[MODEL].target
MODEL_ENV = "MEDSERVE_CT_PATTERN_MODEL_TAG"
DICOM = "application/dicom"
BATCHES = {224: (1, 8, 32), 512: (1, 4, 16)}
DEFAULT_BATCHES = (1, 8, 16)
SYNTHETIC = {"synthetic_nsip_patients": 3, "synthetic_uip_patients": 3}
# Enough optimiser steps for BatchNorm's moving statistics to settle (momentum 0.5): with fewer,
# a from-scratch backbone answers one constant probability and every equality check is vacuous.
TRAINING = {"epochs": 6, "augment_copies": 3, "bn_momentum": 0.5, "patience": 6}
PROBABILITY_TOLERANCE = 1e-3  # the bound for a faster runtime vs the reference
SERVICE_TOLERANCE = 1e-5  # the service runs the same ONNX file on the same decoded pixels
MIN_SPREAD = 0.01  # P(uip) max - min over the slices: below, the model ignores its input
RATIO_TARGET = 0.85  # service images/s / in-process pipeline images/s
SPEEDUP_TARGET = 2.0
RSS_TARGET_MIB = 1.5 * 1000**3 / 2**20  # 1.5 GB
KERAS = "Keras `predict_on_batch` (baseline)"
ONNX_POOL = "ONNX Runtime, one call, a thread per core"
ONNX_CONCURRENT = "ONNX Runtime, one 1-thread call per core at once (as served)"
ONNX = (ONNX_POOL, ONNX_CONCURRENT)
PIPELINE = "in-process pipeline: decode + preprocess + ONNX, one 1-thread call per core at once"


@dataclass(frozen=True, slots=True)
class Setup:
    """One trained model and the DICOM slices request bodies and raw batches are made of."""

    size: int
    tag: str
    folder: Path
    parameters: int
    train_s: float
    files: list[Path]  # 512-px synthetic DICOM slices


@dataclass(frozen=True, slots=True)
class ServiceRun:
    load: LoadResult
    mean_batch: float
    inference_ms: float

    @property
    def images_per_s(self) -> float:
        """Answered images per second: shed (503) and failed requests do not count."""
        if not self.load.requests:
            return 0.0
        return self.load.rps * (self.load.requests - self.load.errors) / self.load.requests


@dataclass(frozen=True, slots=True)
class SizeResult:
    """Everything measured at one model input size."""

    setup: Setup
    raw: list[RawResult]
    gap: float
    spread: float
    cold_start_s: float
    check: str
    body_bytes: int
    runs: list[ServiceRun]
    rss: list[ProcessRss]
    load_average: float


# --------------------------------------------------------------------------- model and slices


def prepare_model(size: int, alpha: float, slices_per_patient: int) -> Setup:
    """Train and store a briefly trained MobileNetV2 at `size` px; keep the slice files."""
    from medserve.ct.dataset import find_slices
    from medserve.model_store import model_folder
    from training.ct_pattern import CtTrainConfig, dataset_root, train

    config = CtTrainConfig(
        image_size=size,
        synthetic_size=512,
        synthetic_slices_per_patient=slices_per_patient,
        architectures=["mobilenet_v2"],
        mobilenet_alpha=alpha,
        version=f"bench{size}",
        **SYNTHETIC,
        **TRAINING,
    )
    started = time.perf_counter()
    result = train(config)
    train_s = time.perf_counter() - started
    files = [path for _, _, path in find_slices(dataset_root(config))]
    return Setup(
        size=size,
        tag=result.tag,
        folder=model_folder(result.tag),
        parameters=int(result.metrics["parameters"]),
        train_s=train_s,
        files=files,
    )


def model_batch(setup: Setup, n: int) -> np.ndarray:
    """`n` slices decoded as the service decodes them: [n, size, size, 1] float32."""
    from medserve.ct.imaging import Window, decode_slice, model_input

    images = []
    for i in range(n):
        data = setup.files[i % len(setup.files)].read_bytes()
        decoded = decode_slice(data, Window(), max_bytes=len(data))
        images.append(model_input(decoded.windowed, setup.size))
    return np.stack(images)


# --------------------------------------------------------------------------- raw model


def measure_raw(setup: Setup, seconds: float) -> tuple[list[RawResult], float, float]:
    """Keras and ONNX Runtime (both ways of using the cores) per batch size; the largest
    probability gap between ONNX Runtime and Keras."""
    from medserve.ct.runtime import ONNX_FILE, KerasRunner, OnnxRunner, keras_model

    cores = len(os.sched_getaffinity(0))
    keras = KerasRunner(keras_model(setup.folder))
    pooled = OnnxRunner(setup.folder / ONNX_FILE, threads=cores)
    single = OnnxRunner(setup.folder / ONNX_FILE, threads=1)
    results = []
    batches = BATCHES.get(setup.size, DEFAULT_BATCHES)
    for batch in batches:
        images = model_batch(setup, batch)
        for timed in (
            time_calls(keras.predict, images, seconds, KERAS),
            time_calls(pooled.predict, images, seconds, ONNX_POOL),
            time_concurrent(single.predict, images, seconds, cores, ONNX_CONCURRENT),
        ):
            results.append(timed)
            print(
                f"   {timed.runner} batch {batch}: {timed.rows_per_s:,.1f} images/s "
                f"({timed.mean_ms:.1f} ms/call)",
                flush=True,
            )
    images = model_batch(setup, len(setup.files))
    reference = keras.predict(images)
    gap = max(
        float(np.max(np.abs(runner.predict(images) - reference))) for runner in (pooled, single)
    )
    spread = float(np.ptp(reference[:, -1]))
    print(
        f"   ONNX vs Keras on {len(images)} slices: max|p diff| {gap:.2e}; P(uip) spread "
        f"{spread:.3f}",
        flush=True,
    )
    if gap > PROBABILITY_TOLERANCE:
        raise SystemExit(f"ONNX Runtime differs from Keras by {gap:.2e} in probability")
    if spread < MIN_SPREAD:
        raise SystemExit(f"the model answers ~one probability for every slice ({spread:.2e})")
    return results, gap, spread


def measure_pipeline(setup: Setup, body: bytes, seconds: float) -> RawResult:
    """The service's own path for one DICOM body, in this process: decode, HU, window, resize,
    model; as many threads at once as the service keeps model calls in flight."""
    from medserve.ct.imaging import Window, decode_slice, model_input
    from medserve.ct.runtime import ONNX_FILE, OnnxRunner

    cores = len(os.sched_getaffinity(0))
    single = OnnxRunner(setup.folder / ONNX_FILE, threads=1)

    def slice_to_answer(files: np.ndarray) -> np.ndarray:
        decoded = decode_slice(files[0], Window(), max_bytes=len(files[0]))
        return single.predict(model_input(decoded.windowed, setup.size)[np.newaxis])

    bodies = np.array([body], dtype=object)
    timed = time_concurrent(slice_to_answer, bodies, seconds, cores, PIPELINE)
    print(f"   {PIPELINE}: {timed.rows_per_s:,.1f} images/s ({timed.mean_ms:.1f} ms/call)")
    return timed


def best(raw: list[RawResult], runners: str | tuple[str, ...]) -> RawResult:
    """The fastest result among `runners` (a name or several), over every batch size."""
    names = (runners,) if isinstance(runners, str) else runners
    return max((r for r in raw if r.runner in names), key=lambda r: r.rows_per_s)


# --------------------------------------------------------------------------- service


def check_answer(base_url: str, setup: Setup, body: bytes, headers: dict[str, str]) -> str:
    """The service's probabilities for `body` must equal ONNX Runtime's in this process."""
    from medserve.ct.runtime import ONNX_FILE, OnnxRunner

    answer = post_json(f"{base_url}/predict/image", body, DICOM, timeout_s=60, headers=headers)
    prediction = answer["predictions"][0]
    want = OnnxRunner(setup.folder / ONNX_FILE).predict(model_batch(setup, 1))[0]
    got = np.asarray(list(prediction["probabilities"].values()), dtype=np.float32)
    gap = float(np.max(np.abs(got - want)))
    ok = gap <= SERVICE_TOLERANCE and prediction["model_tag"] == setup.tag
    line = (
        f"{'OK ' if ok else 'FAIL'} {setup.size} px: /predict/image answered "
        f"{prediction['predicted_class']!r}, max|p diff| vs in-process ONNX {gap:.2e} (tolerance "
        f"{SERVICE_TOLERANCE:g}), model_tag {prediction['model_tag']}"
    )
    require(ok, line)
    return line


def load_run(
    base_url: str, body: bytes, connections: int, duration_s: float, headers: dict[str, str]
) -> ServiceRun:
    url = f"{base_url}/predict/image"
    load, batches = batches_during(
        base_url,
        MODEL,
        lambda: run_wrk(url, body, DICOM, connections, duration_s, headers=headers),
    )
    run = ServiceRun(load, batches.mean_batch, batches.inference_ms)
    print(
        f"   c={connections}: {run.images_per_s:,.1f} images/s, p50 {load.p50_ms:.1f} ms, "
        f"p99 {load.p99_ms:.1f} ms, errors {load.errors}, mean batch {run.mean_batch:.1f}",
        flush=True,
    )
    return run


def measure_size(size: int, args: argparse.Namespace, tmp: Path) -> SizeResult:
    """Everything for one model input size: train, raw model, then the service."""
    print(f"== {size} px: training MobileNetV2 (alpha {args.alpha}) ...", flush=True)
    setup = prepare_model(size, args.alpha, args.slices_per_patient)
    print(f"   {setup.tag}: {setup.parameters:,} parameters, {setup.train_s:.0f} s", flush=True)
    raw, gap, spread = measure_raw(setup, args.raw_seconds)
    body = setup.files[0].read_bytes()
    raw.append(measure_pipeline(setup, body, args.raw_seconds))
    load_average = os.getloadavg()[0]
    started = time.perf_counter()
    with serve_medserve(
        setup.tag, args.workers, tmp / f"serve-{size}", target=TARGET, model_env=MODEL_ENV
    ) as (base_url, root_pid):
        cold_start_s = time.perf_counter() - started
        print(f"   service ready after {cold_start_s:.2f} s", flush=True)
        headers = auth_headers(bench_token())
        check = check_answer(base_url, setup, body, headers)
        warmup(f"{base_url}/predict/image", body, DICOM, WARMUP_S, headers)
        runs = [load_run(base_url, body, c, args.duration, headers) for c in args.connections]
        rss = memory(MEDSERVE, root_pid)
    return SizeResult(
        setup, raw, gap, spread, cold_start_s, check, len(body), runs, rss, load_average
    )


# --------------------------------------------------------------------------- reporting


def raw_table(raw: list[RawResult]) -> str:
    return markdown_table(
        [
            {
                "runner": r.runner,
                "batch": r.batch,
                "calls": r.calls,
                "mean ms/call": round(r.mean_ms, 1),
                "p99 ms/call": round(r.p99_ms, 1),
                "images/s": round(r.rows_per_s, 1),
            }
            for r in raw
        ]
    )


def service_table(result: SizeResult) -> str:
    served, pipeline = best(result.raw, ONNX), best(result.raw, PIPELINE)
    return markdown_table(
        [
            {
                "connections": run.load.connections,
                "images/s (2xx)": round(run.images_per_s, 1),
                "p50 ms": run.load.p50_ms,
                "p99 ms": run.load.p99_ms,
                "errors": run.load.errors,
                "mean adaptive batch": round(run.mean_batch, 1),
                "model ms/batch": round(run.inference_ms, 1),
                "wrk CPU s": run.load.client_cpu_seconds,
                "÷ in-process pipeline": f"{run.images_per_s / pipeline.rows_per_s:.1%}",
                "÷ best raw ONNX": f"{run.images_per_s / served.rows_per_s:.1%}",
            }
            for run in result.runs
        ]
    )


def target_rows(results: list[SizeResult]) -> list[dict[str, Any]]:
    rows = []
    for result in results:
        keras, onnx = best(result.raw, KERAS), best(result.raw, ONNX)
        pipeline = best(result.raw, PIPELINE)
        top = max(result.runs, key=lambda r: r.images_per_s)
        ratio = top.images_per_s / pipeline.rows_per_s
        speedup = onnx.rows_per_s / keras.rows_per_s
        workers = [p.rss_mb for p in result.rss if p.role == "worker"]
        biggest = max(workers, default=0.0)
        rows.append(
            {
                "size px": result.setup.size,
                "raw Keras images/s": f"{keras.rows_per_s:.1f} (batch {keras.batch})",
                "raw ONNX images/s": f"{onnx.rows_per_s:.1f} (batch {onnx.batch})",
                "ONNX ÷ Keras": f"{speedup:.2f}x",
                "max p gap": f"{result.gap:.1e}",
                "in-process pipeline images/s": f"{pipeline.rows_per_s:.1f}",
                "service images/s": f"{top.images_per_s:.1f} (c={top.load.connections})",
                "service p99 ms": top.load.p99_ms,
                "service ÷ pipeline": f"{ratio:.1%}",
                "service ÷ raw ONNX": f"{top.images_per_s / onnx.rows_per_s:.1%}",
                "worker RSS MiB": round(biggest),
                "cold start s": round(result.cold_start_s, 1),
                f"targets (>= {RATIO_TARGET:.0%}, >= {SPEEDUP_TARGET:g}x, < 1.5 GB)": ", ".join(
                    "yes" if met else "**no**"
                    for met in (
                        ratio >= RATIO_TARGET and top.load.errors == 0,
                        speedup >= SPEEDUP_TARGET and result.gap <= PROBABILITY_TOLERANCE,
                        bool(workers) and biggest < RSS_TARGET_MIB,
                    )
                ),
            }
        )
    return rows


def header_lines(
    results: list[SizeResult], args: argparse.Namespace, load: tuple[float, ...]
) -> list[str]:
    from medserve.ct.settings import get_ct_settings
    from medserve.settings import get_settings

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}"
        for name in ("bentoml", "keras", "tensorflow", "onnxruntime", "tf2onnx", "pydicom")
    )
    from medserve.ct.model import batch_cap
    from medserve.ct.runtime import plan_execution

    settings, ct = get_settings(), get_ct_settings()
    cores = settings.cores
    plan = plan_execution(ct, args.workers, cores)
    models = "; ".join(
        f"{r.setup.tag} ({r.setup.parameters:,} parameters, trained in {r.setup.train_s:.0f} s)"
        for r in results
    )
    seconds = max(1, round(args.duration))
    return [
        f"- date: {now}",
        machine_line(load),
        f"- versions: Python {platform.python_version()}, {versions}; {wrk_version()}",
        f"- models: MobileNetV2 alpha {args.alpha}, 2-class head, {TRAINING['epochs']} epochs "
        f"(BatchNorm momentum {TRAINING['bn_momentum']}, {TRAINING['augment_copies']} augmented "
        "copies per slice) on a 512-px synthetic "
        f"set ({SYNTHETIC['synthetic_nsip_patients']} NSIP + "
        f"{SYNTHETIC['synthetic_uip_patients']} UIP patients x {args.slices_per_patient} "
        f"slices): {models}",
        f"- raw model: in this process, {cores} cores; Keras/TensorFlow with oneDNN and its "
        "default thread pools; ONNX Runtime with all graph optimisations, either one call with "
        f"{cores} intra-op threads or {cores} threads each making 1-thread calls on one shared "
        f"session; windowed slices decoded beforehand; {args.raw_seconds:g} s per runner and "
        "batch after 10 warm-up calls; measured before the service started",
        f"- service: `bentoml serve {TARGET}`, MEDSERVE_WORKERS={args.workers}, runtime "
        f"{ct.runtime}, {plan.concurrent_batches} batch(es) in flight x "
        f"{plan.threads_per_batch} thread(s), batches of at most "
        + ", ".join(
            f"{min(settings.max_batch_size, batch_cap(ct, r.setup.size))} slices at "
            f"{r.setup.size} px"
            for r in results
        )
        + f", max_latency_ms "
        f"{settings.max_latency_ms}; every request is parsed, rescaled, windowed and resized",
        f"- load: wrk, 1 thread, closed loop, keep-alive, `POST /predict/image` with one "
        f"512x512 12-bit DICOM slice ({results[0].body_bytes:,} B); {WARMUP_S:g} s warm-up, "
        f"then {seconds} s per connection count; errors = non-2xx (503 = shed by the adaptive "
        "batcher's latency budget) + socket errors + timeouts; images/s counts 2xx answers only",
        "- access control: "
        + (
            "MEDSERVE_AUTH_MODE=local, every request carries a bearer token (`Authorization` "
            "header, Ed25519, the isolated home's local key)"
            if bench_token()
            else "OFF (MEDSERVE_AUTH_MODE=off), no token sent"
        ),
    ]


def report(results: list[SizeResult], args: argparse.Namespace, load: tuple[float, ...]) -> str:
    lines = [
        "# Lung CT serving: medserve under load vs the raw model (Keras, ONNX Runtime)",
        "",
        *header_lines(results, args, load),
        "",
        "## Targets",
        "",
        markdown_table(target_rows(results)),
        "",
        "## Correctness checks",
        "",
        *(f"- `{r.check}`" for r in results),
        *(
            f"- ONNX Runtime vs Keras at {r.setup.size} px on all {len(r.setup.files)} slices: "
            f"max probability gap {r.gap:.2e} (tolerance {PROBABILITY_TOLERANCE:g}); P(uip) "
            f"ranges over {r.spread:.3f} across them (the answers depend on the input)"
            for r in results
        ),
    ]
    for r in results:
        rss = [Measurement(ServerConfig(MEDSERVE, TARGET), [], r.rss, r.load_average)]
        lines += [
            "",
            f"## {r.setup.size} px",
            "",
            "Raw model in this process (no server running):",
            "",
            raw_table(r.raw),
            "",
            f"Service under load (1-min load average at its start {r.load_average:.2f}; ready "
            f"{r.cold_start_s:.2f} s after process start):",
            "",
            service_table(r),
            "",
            "Memory after the load:",
            "",
            rss_table(rss),
        ]
    return "\n".join([*lines, ""])


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--workers", type=int, default=1, help="MEDSERVE_WORKERS")
    parser.add_argument("--raw-seconds", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width")
    parser.add_argument("--slices-per-patient", type=int, default=4)
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, homes)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load = os.getloadavg()
    with temp_dir("ct-serving-bench-", args.keep) as tmp:
        isolate_homes(tmp)
        results = [measure_size(size, args, tmp) for size in args.sizes]
        text = report(results, args, load)
    publish(text, args.out)


if __name__ == "__main__":
    main()
