"""Heart model served side by side: medserve (BentoML) vs MLServer 1.7, same fitted model.

Usage: ``uv run python -m bench.heart_serving [--duration 10] [--connections 1,16,64]
[--workers 2] [--out FILE] [--keep]``.

One run trains the heart model into a throw-away MEDSERVE_HOME/BENTOML_HOME, checks that every
server gives the same probabilities for one patient, then drives each server configuration in
turn (never two servers at once) with wrk: a short warm-up, then one closed-loop run per
connection count. MLServer runs with two runtimes: the scikit-learn pipeline through
mlserver_sklearn, and the compiled LinearScorer that medserve itself evaluates (through
bench.mlserver_scorer_runtime), so that server cost can be told apart from model cost. medserve
runs twice: with access control (``MEDSERVE_AUTH_MODE=local``, every request carrying a bearer
token from ``bench.access``; the one compared with MLServer) and right after it with
``MEDSERVE_AUTH_MODE=off``, same requests, to show what token validation costs. It prints
markdown tables of throughput/latency, medserve vs the best MLServer config, the token validation
cost (under load and in-process per ``TokenVerifier.verify``) and per-process resident memory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.access import VerifyCost, auth_headers, bench_token, costs_table, verification_costs
from bench.loadgen import (
    LoadResult,
    markdown_table,
    process_tree_rss_mb,
    require,
    run_wrk,
    warmup,
)
from bench.mlserver_peer import (
    DEFAULT_ROOT,
    MODEL_NAME,
    SCORER_RUNTIME,
    SKLEARN_RUNTIME,
    ensure_mlserver_venv,
    free_port,
    serve_mlserver,
    stop_group,
    v2_request_body,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
JSON = "application/json"
WARMUP_S = 3.0
TOLERANCE = 1e-9
MEDSERVE = "medserve"
MLSERVER = "MLServer"
SERVICE_TARGET = "bentos.heart_risk:HeartRisk"
HEART_MODEL_ENV = "MEDSERVE_HEART_RISK_MODEL_TAG"
SKLEARN = "sklearn runtime"
SCORER = "compiled scorer"
AUTH_ON = "local"  # MEDSERVE_AUTH_MODE of the medserve config compared with MLServer
AUTH_OFF = "off"
AUTH_DROP_TARGET = 0.05  # issue 17: access control may cost at most 5 % of the ratio to MLServer
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """One server configuration; `runtime` (SKLEARN or SCORER) and `parallel_workers` are
    MLServer's only."""

    server: str
    label: str
    parallel_workers: int | None = None
    runtime: str = ""


@dataclass(frozen=True, slots=True)
class ProcessRss:
    """Resident memory of one server process after the load."""

    pid: int
    role: str
    rss_mb: float


@dataclass(frozen=True, slots=True)
class Measurement:
    """All wrk runs and the memory of one server configuration."""

    config: ServerConfig
    loads: list[LoadResult]
    rss: list[ProcessRss]
    load_average: float


@dataclass(frozen=True, slots=True)
class Setup:
    """The fitted model and the two request bodies for it."""

    tag: str
    pipeline_path: Path
    scorer_path: Path
    row: list[float]
    reference_proba: list[float]
    class_labels: tuple[str, ...]
    v2_body: bytes
    medserve_body: bytes
    pipeline_ms: float
    scorer_ms: float


_POOLS = (
    ("default (parallel_workers unset = 1)", None),
    ("parallel_workers=2 (documented 2-core)", 2),
    ("parallel_workers=0 (in-process)", 0),
)
MLSERVER_CONFIGS = tuple(
    ServerConfig(MLSERVER, f"{runtime}, {label}", workers, runtime)
    for runtime in (SKLEARN, SCORER)
    for label, workers in _POOLS
)


# --------------------------------------------------------------------------- setup


def isolate_homes(root: Path) -> None:
    """Point MEDSERVE_HOME and BENTOML_HOME at `root`; must run before bentoml is imported."""
    if "bentoml" in sys.modules:
        raise RuntimeError("bentoml was imported before the benchmark set BENTOML_HOME")
    os.environ["MEDSERVE_HOME"] = str(root / "medserve-home")
    os.environ["BENTOML_HOME"] = str(root / "bentoml-home")
    Path(os.environ["MEDSERVE_HOME"]).mkdir(parents=True)


def per_call_ms(predict: Callable[[Any], Any], rows: Any, seconds: float = 1.0) -> float:
    """Mean wall time in ms of `predict(rows)` over about `seconds` after a short warm-up."""
    for _ in range(20):
        predict(rows)
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        predict(rows)
        calls += 1
    return elapsed / calls * 1e3


def prepare_model() -> Setup:
    """Train the heart model into the isolated store; build the request bodies for one patient."""
    import joblib
    import numpy as np

    from medserve.heart.codes import CLASS_LABELS
    from medserve.heart.features import to_matrix
    from medserve.heart.model import PIPELINE_FILE, SCORER_FILE, LinearScorer
    from medserve.model_store import model_folder
    from tests.heart_samples import VALID_PATIENT
    from training.heart_risk import HeartTrainConfig, train

    tag = train(HeartTrainConfig()).tag
    pipeline_path = model_folder(tag) / PIPELINE_FILE
    scorer_path = model_folder(tag) / SCORER_FILE
    row = [float(x) for x in to_matrix([VALID_PATIENT])[0].tolist()]
    pipeline = joblib.load(pipeline_path)
    scorer = LinearScorer.model_validate_json(scorer_path.read_text())
    rows = np.asarray([row])
    proba = pipeline.predict_proba(rows)[0]
    return Setup(
        tag=tag,
        pipeline_path=pipeline_path,
        scorer_path=scorer_path,
        row=row,
        reference_proba=[float(p) for p in proba],
        class_labels=tuple(CLASS_LABELS),
        v2_body=v2_request_body([row]),
        medserve_body=json.dumps({"patients": [VALID_PATIENT]}).encode(),
        pipeline_ms=per_call_ms(pipeline.predict_proba, rows),
        scorer_ms=per_call_ms(scorer.predict_proba, rows),
    )


# --------------------------------------------------------------------------- HTTP helpers


def post_json(
    url: str,
    body: bytes,
    content_type: str = JSON,
    timeout_s: float = 30,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """POST `body` (no proxy) with `headers` besides the content type (medserve: the bearer
    token, `bench.access.auth_headers`); return the decoded JSON answer; raise on non-2xx."""
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": content_type, **(headers or {})}
    )
    with _OPENER.open(request, timeout=timeout_s) as resp:
        return json.loads(resp.read())


def post_status(url: str, body: bytes, content_type: str = JSON) -> int:
    """Status of POST `body` to `url` without credentials (raises when nothing answers)."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with _OPENER.open(request, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def get_text(url: str) -> str:
    """GET `url` (no proxy) and return the body as text; raise on non-2xx."""
    with _OPENER.open(url, timeout=30) as resp:
        return resp.read().decode()


def http_status(url: str) -> int | None:
    """Status of GET `url`, or None when nothing answers."""
    try:
        with _OPENER.open(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, http.client.HTTPException):
        return None


# --------------------------------------------------------------------------- medserve service


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while http_status(url) != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"medserve not ready (exit {proc.poll()}), {log}:\n{tail}")
        time.sleep(0.25)


def migrate_database(env: Mapping[str, str]) -> None:
    """What `medserve up` does before a service starts: services refuse an unmigrated schema."""
    from medserve.database.schema import upgrade
    from medserve.settings import Settings

    home = Path(env["MEDSERVE_HOME"])
    upgrade(
        Settings(home=home, database_url=env.get("MEDSERVE_DATABASE_URL")).resolved_database_url
    )


@contextmanager
def serve_medserve(
    tag: str,
    workers: int,
    workdir: Path,
    timeout_s: float = 180.0,
    grpc_port: int | None = None,
    target: str = SERVICE_TARGET,
    model_env: str = HEART_MODEL_ENV,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[tuple[str, int]]:
    """Run `bentoml serve` of `target` (default: the heart service) in its own process group,
    with model `tag` in the env var `model_env`; yield (URL, pid) once /readyz answers 200.

    Its OIP gRPC server listens on 127.0.0.1:`grpc_port` (a free port when None). It inherits
    this process's environment (MEDSERVE_HOME: it trusts `bench.access.bench_token`) plus
    `extra_env` (e.g. MEDSERVE_AUTH_MODE).
    """
    port = free_port()
    env = dict(os.environ) | dict(extra_env or {})
    env |= {model_env: tag, "MEDSERVE_WORKERS": str(workers)}
    migrate_database(env)
    env |= {"MEDSERVE_GRPC_HOST": "127.0.0.1", "MEDSERVE_GRPC_PORT": str(grpc_port or free_port())}
    cmd = [sys.executable, "-m", "bentoml", "serve", target]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "medserve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        _wait_ready(f"{base_url}/readyz", proc, log, timeout_s)
        yield base_url, proc.pid
    finally:
        stop_group(proc)


@contextmanager
def serve_mlserver_pid(
    setup: Setup, config: ServerConfig, exe: Path, workdir: Path
) -> Iterator[tuple[str, int]]:
    """`serve_mlserver` for one config; yield (URL, pid of the `mlserver start` process)."""
    if config.runtime == SCORER:
        model_path, implementation, pythonpath = setup.scorer_path, SCORER_RUNTIME, REPO_ROOT
    else:
        model_path, implementation, pythonpath = setup.pipeline_path, SKLEARN_RUNTIME, None
    with serve_mlserver(
        model_path,
        workdir,
        free_port(),
        free_port(),
        config.parallel_workers,
        exe,
        implementation=implementation,
        pythonpath=pythonpath,
    ) as base_url:
        yield base_url, int((workdir / "mlserver.pid").read_text())


# --------------------------------------------------------------------------- correctness


def _max_gap(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def mlserver_proba(base_url: str, setup: Setup) -> list[float]:
    """predict_proba of the benchmark row as MLServer returns it."""
    answer = post_json(f"{base_url}/v2/models/{MODEL_NAME}/infer", setup.v2_body)
    output = next(o for o in answer["outputs"] if o["name"] == "predict_proba")
    return [float(p) for p in output["data"]]


def medserve_proba(
    base_url: str, setup: Setup, headers: Mapping[str, str] | None = None
) -> list[float]:
    """Class probabilities of the benchmark patient as medserve returns them (label order);
    `headers` carry the bearer token."""
    answer = post_json(f"{base_url}/predict", setup.medserve_body, headers=headers)
    probabilities = answer["predictions"][0]["probabilities"]
    return [float(probabilities[label]) for label in setup.class_labels]


def check(name: str, got: list[float], want: list[float], against: str) -> str:
    """One line saying whether `got` sums to 1 and matches `want` within TOLERANCE; raise if not."""
    total, gap = sum(got), _max_gap(got, want)
    ok = abs(total - 1.0) <= TOLERANCE and gap <= TOLERANCE
    line = (
        f"{'OK ' if ok else 'FAIL'} {name}: proba={[round(p, 12) for p in got]} "
        f"sum={total:.15f} max|diff| vs {against}={gap:.2e} (tolerance {TOLERANCE:g})"
    )
    require(ok, line)
    return line


# --------------------------------------------------------------------------- measuring


def process_role(server: str, pid: int, root_pid: int) -> str:
    """What a server process is, from its command line."""
    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except psutil.NoSuchProcess:
        return "exited"
    if "resource_tracker" in cmdline:
        return "multiprocessing resource tracker"
    if server == MEDSERVE:
        if pid == root_pid:
            return "bentoml serve (circus arbiter)"
        return "worker" if "_bentoml_impl.worker" in cmdline else f"other: {cmdline[:60]}"
    if pid == root_pid:
        return "mlserver start (REST/gRPC front-end)"
    return "inference worker" if "multiprocessing" in cmdline else f"other: {cmdline[:60]}"


def memory(server: str, root_pid: int) -> list[ProcessRss]:
    """RSS of the server's process tree, one entry per process."""
    return [
        ProcessRss(pid, process_role(server, pid, root_pid), rss)
        for pid, rss in process_tree_rss_mb(root_pid).items()
    ]


def measure(
    config: ServerConfig,
    server: AbstractContextManager[tuple[str, int]],
    url_path: str,
    body: bytes,
    args: argparse.Namespace,
    verify: Callable[[str], None],
    headers: Mapping[str, str] | None = None,
) -> Measurement:
    """Start one server config, verify its answer, warm it up, run wrk per connection count
    (every request with `headers`: medserve's bearer token)."""
    load_average = os.getloadavg()[0]
    print(f"== {config.server} {config.label} (1-min load average {load_average:.2f})", flush=True)
    with server as (base_url, root_pid):
        verify(base_url)
        url = base_url + url_path
        warmup(url, body, JSON, WARMUP_S, headers)
        loads = []
        for connections in args.connections:
            result = run_wrk(url, body, JSON, connections, args.duration, headers=headers)
            print(
                f"   c={connections}: {result.rps:.0f} req/s, p50 {result.p50_ms:.2f} ms, "
                f"p99 {result.p99_ms:.2f} ms, errors {result.errors}",
                flush=True,
            )
            loads.append(result)
        rss = memory(config.server, root_pid)
    return Measurement(config, loads, rss, load_average)


# --------------------------------------------------------------------------- reporting


def machine_line(load: tuple[float, ...]) -> str:
    """One markdown bullet: cores available, CPU model, RAM and the load average at start."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return (
        f"- machine: nproc {len(os.sched_getaffinity(0))}, {cpu}, "
        f"{mem_kb / 2**20:.1f} GiB RAM, load average at start "
        f"{' '.join(f'{x:.2f}' for x in load)}"
    )


def host_lines(mlserver_exe: Path, load: tuple[float, ...]) -> list[str]:
    """Date, machine and main versions as markdown bullet lines."""
    probe = "import importlib.metadata as m; print(m.version('mlserver'))"
    venv_python = mlserver_exe.parent / "python"
    mlserver_version = subprocess.run(
        [venv_python, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"- date: {now}",
        machine_line(load),
        f"- versions: Python {platform.python_version()}, "
        f"bentoml {importlib.metadata.version('bentoml')}, mlserver {mlserver_version}, "
        f"scikit-learn {importlib.metadata.version('scikit-learn')}",
    ]


def machine_lines(
    setup: Setup, mlserver_exe: Path, args: argparse.Namespace, load: tuple[float, ...]
) -> list[str]:
    """Machine, date, versions and the benchmark's setup as markdown bullet lines."""
    return [
        *host_lines(mlserver_exe, load),
        f"- model: {setup.tag}; MLServer serves its `pipeline.joblib` with `{SKLEARN_RUNTIME}` "
        f"({SKLEARN}) and its `scorer.json` with `{SCORER_RUNTIME}` ({SCORER}, the "
        "LinearScorer medserve evaluates)",
        f"- load: wrk, 1 thread, closed loop, keep-alive, {WARMUP_S:g} s warm-up per config, "
        f"then {max(1, round(args.duration))} s per connection count; one server at a time",
        f"- medserve: `bentoml serve {SERVICE_TARGET}`, MEDSERVE_WORKERS={args.workers}, "
        f'POST /predict `{{"patients": [VALID_PATIENT]}}` ({len(setup.medserve_body)} B)',
        f"- medserve access control: measured with MEDSERVE_AUTH_MODE={AUTH_ON} (the config "
        "compared with MLServer), every request carrying `Authorization: Bearer <token>` "
        f"(Ed25519, signed by the isolated home's local key, roles predict + read_log, "
        f"{len(bench_token(AUTH_ON) or '')} characters; each worker verifies it once, then "
        "serves it from its verified-token cache), then right after it with "
        f"MEDSERVE_AUTH_MODE={AUTH_OFF}, the same requests (the header is ignored)",
        f"- MLServer: POST /v2/models/{MODEL_NAME}/infer, FP64 [1, 13], "
        f"outputs predict_proba ({len(setup.v2_body)} B)",
        f"- model cost of one row, in this process without a server: scikit-learn pipeline "
        f"predict_proba (MLServer {SKLEARN}) {setup.pipeline_ms:.3f} ms, compiled LinearScorer "
        f"(medserve and MLServer {SCORER}) {setup.scorer_ms:.3f} ms",
    ]


def results_table(measurements: list[Measurement]) -> str:
    rows = [
        {
            "server": m.config.server,
            "config": m.config.label,
            "connections": r.connections,
            "req/s": round(r.rps),
            "p50 ms": r.p50_ms,
            "p99 ms": r.p99_ms,
            "errors": r.errors,
            "wrk CPU s": r.client_cpu_seconds,
        }
        for m in measurements
        for r in m.loads
    ]
    return markdown_table(rows)


def ratio_table(ours: Measurement, peers: list[Measurement]) -> str:
    """medserve vs the MLServer config (of all, both runtimes) with the most req/s at each
    connection count."""
    rows = []
    for index, mine in enumerate(ours.loads):
        best = max(peers, key=lambda m: m.loads[index].rps)
        theirs = best.loads[index]
        rows.append(
            {
                "connections": mine.connections,
                "medserve req/s": round(mine.rps),
                "best MLServer config": best.config.label,
                "MLServer req/s": round(theirs.rps),
                "req/s ratio (medserve / MLServer)": mine.rps / theirs.rps,
                "medserve p99 ms": mine.p99_ms,
                "MLServer p99 ms": theirs.p99_ms,
                "p99 ratio (medserve / MLServer)": mine.p99_ms / theirs.p99_ms,
            }
        )
    return markdown_table(rows)


def runtime_table(peers: list[Measurement]) -> str:
    """Best MLServer req/s per runtime at each connection count: what the model runtime costs."""
    rows = []
    for index, load in enumerate(peers[0].loads):
        row: dict[str, Any] = {"connections": load.connections}
        best_rps = {}
        for runtime in (SKLEARN, SCORER):
            best = max(
                (m for m in peers if m.config.runtime == runtime),
                key=lambda m: m.loads[index].rps,
            )
            best_rps[runtime] = best.loads[index].rps
            row[f"{runtime} best req/s"] = round(best_rps[runtime])
            row[f"{runtime} best config"] = best.config.label.removeprefix(f"{runtime}, ")
        row[f"{SCORER} / {SKLEARN}"] = best_rps[SCORER] / best_rps[SKLEARN]
        rows.append(row)
    return markdown_table(rows)


def rss_table(measurements: list[Measurement]) -> str:
    rows: list[dict[str, Any]] = []
    for m in measurements:
        for proc in m.rss:
            rows.append(
                {
                    "server": m.config.server,
                    "config": m.config.label,
                    "pid": proc.pid,
                    "role": proc.role,
                    "RSS MiB": proc.rss_mb,
                }
            )
        total = sum(p.rss_mb for p in m.rss)
        rows.append(
            {
                "server": m.config.server,
                "config": m.config.label,
                "pid": "",
                "role": f"**total, {len(m.rss)} processes**",
                "RSS MiB": total,
            }
        )
    return markdown_table(rows)


def auth_cost_table(ours: Measurement, auth_off: Measurement, peers: list[Measurement]) -> str:
    """Per connection count: req/s with and without token validation, and what it does to the
    medserve / best-MLServer ratio (issue 17: a drop of at most AUTH_DROP_TARGET)."""
    rows = []
    for index, (mine, open_) in enumerate(zip(ours.loads, auth_off.loads, strict=True)):
        theirs = max(m.loads[index].rps for m in peers)
        ratio_on, ratio_off = mine.rps / theirs, open_.rps / theirs
        drop = 1 - ratio_on / ratio_off
        rows.append(
            {
                "connections": mine.connections,
                "req/s auth": round(mine.rps),
                "req/s auth off": round(open_.rps),
                "req/s drop": f"{1 - mine.rps / open_.rps:.1%}",
                "p99 ms auth / off": f"{mine.p99_ms:.2f} / {open_.p99_ms:.2f}",
                "ratio to best MLServer, auth": ratio_on,
                "ratio, auth off": ratio_off,
                "ratio drop": f"{drop:.1%}",
                f"target (drop <= {AUTH_DROP_TARGET:.0%})": (
                    "yes" if drop <= AUTH_DROP_TARGET else "**no**"
                ),
            }
        )
    return markdown_table(rows)


def report(
    header: list[str],
    checks: list[str],
    measurements: list[Measurement],
    ours: Measurement,
    auth_off: Measurement,
    verify_costs: list[VerifyCost],
) -> str:
    peers = [m for m in measurements if m.config.server == MLSERVER]
    return "\n".join(
        [
            "# Heart model serving: medserve vs MLServer",
            "",
            *header,
            "",
            "## Correctness check (before measuring)",
            "",
            *(f"- `{line}`" for line in checks),
            "",
            "## Throughput and latency",
            "",
            results_table(measurements),
            "",
            "1-min load average just before each config started (it includes the decaying load of"
            " the previous config; more means other work competed for the cores):",
            "",
            *(f"- {m.config.server} {m.config.label}: {m.load_average:.2f}" for m in measurements),
            "",
            f"## medserve vs MLServer's best config (of all {len(peers)}) per connection count",
            "",
            ratio_table(ours, peers),
            "",
            "## Token validation cost",
            "",
            f"medserve with access control ({ours.config.label}) vs without "
            f"({auth_off.config.label}), measured one right after the other with the same "
            "requests; ratio = medserve req/s / the best MLServer config's at that connection "
            "count (the same MLServer figure for both, so the ratio drops as much as req/s). "
            "Differences of a few % are within run-to-run noise on a shared machine: compare the "
            "load averages above.",
            "",
            auth_cost_table(ours, auth_off, peers),
            "",
            "`TokenVerifier.verify` in this process (one event loop, call by call, before any "
            "server started): cold = a token seen for the first time (header, key, signature, "
            "claims; each token verified once), warm = the same token again (the per-worker cache "
            "of verified tokens, service defaults):",
            "",
            costs_table(verify_costs),
            "",
            "## MLServer: best config per runtime (model cost vs server cost)",
            "",
            runtime_table(peers),
            "",
            "## Resident memory after the load",
            "",
            rss_table(measurements),
            "",
        ]
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument(
        "--connections",
        type=lambda s: [int(c) for c in s.split(",") if c.strip()],
        default=[1, 16, 64],
        help="comma-separated connection counts",
    )
    parser.add_argument("--workers", type=int, default=2, help="medserve MEDSERVE_WORKERS")
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, homes)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, tmp: Path) -> str:
    """The whole benchmark inside the temp dir `tmp`; return the markdown report."""
    load = os.getloadavg()
    isolate_homes(tmp)
    print(f"training the heart model into {tmp} ...", flush=True)
    setup = prepare_model()
    print("timing TokenVerifier.verify in-process ...", flush=True)
    verify_costs = verification_costs()
    exe = ensure_mlserver_venv(DEFAULT_ROOT)
    header = machine_lines(setup, exe, args, load)
    checks: list[str] = []
    measurements: list[Measurement] = []
    # The last answer of each MLServer runtime; medserve's must equal every one of them.
    mlserver_answers: dict[str, list[float]] = {}

    for config in MLSERVER_CONFIGS:
        workdir = tmp / f"mlserver-{config.runtime.replace(' ', '-')}-{config.parallel_workers}"

        def verify_mlserver(base_url: str, config: ServerConfig = config) -> None:
            got = mlserver_proba(base_url, setup)
            name = f"MLServer {config.label}"
            checks.append(check(name, got, setup.reference_proba, "local pipeline"))
            mlserver_answers[config.runtime] = got

        server = serve_mlserver_pid(setup, config, exe, workdir)
        path = f"/v2/models/{MODEL_NAME}/infer"
        measurements.append(measure(config, server, path, setup.v2_body, args, verify_mlserver))

    # Both medserve configs get the same requests: the difference is the token's validation.
    headers = auth_headers(bench_token(AUTH_ON))
    medserve_configs = []
    for mode, suffix in ((AUTH_ON, ""), (AUTH_OFF, ", auth off")):

        def verify_medserve(base_url: str, mode: str = mode, suffix: str = suffix) -> None:
            name = f"medserve /predict{suffix}"
            got = medserve_proba(base_url, setup, headers)
            for runtime, answer in mlserver_answers.items():
                against = f"MLServer {runtime} predict_proba"
                checks.append(check(name, got, answer, against))
            status = post_status(f"{base_url}/predict", setup.medserve_body)
            want = 401 if mode == AUTH_ON else 200
            line = f"MEDSERVE_AUTH_MODE={mode}: POST /predict without a token -> {status}"
            checks.append(require(status == want, f"{'OK ' if status == want else 'FAIL'} {line}"))

        config = ServerConfig(MEDSERVE, f"bentoml serve, workers={args.workers}{suffix}")
        server = serve_medserve(
            setup.tag,
            args.workers,
            tmp / f"medserve-auth-{mode}",
            extra_env={"MEDSERVE_AUTH_MODE": mode},
        )
        path, body = "/predict", setup.medserve_body
        medserve_configs.append(measure(config, server, path, body, args, verify_medserve, headers))
    measurements += medserve_configs
    ours, auth_off = medserve_configs
    return report(header, checks, measurements, ours, auth_off, verify_costs)


@contextmanager
def temp_dir(prefix: str, keep: bool) -> Iterator[Path]:
    """A fresh temp dir for one benchmark run, removed at the end unless `keep`."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        if keep:
            print(f"kept {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with temp_dir("heart-serving-bench-", args.keep) as tmp:
        text = run(args, tmp)
    publish(text, args.out)


def publish(text: str, out: Path | None) -> None:
    """Print a report and, with `--out`, also write it to that file."""
    print("\n" + text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
