"""MLServer 1.7 peer for the side-by-side serving benchmark.

MLServer runs in its own venv (its pins clash with the project's) and serves the heart model over
the Open Inference Protocol v2 with one of two runtimes (``implementation``):

- ``mlserver_sklearn.SKLearnModel`` (``SKLEARN_RUNTIME``, the default) loads the joblib scikit-learn
  pipeline (model uri ``pipeline.joblib``);
- ``bench.mlserver_scorer_runtime.LinearScorerRuntime`` (``SCORER_RUNTIME``) loads the compiled
  ``LinearScorer`` that medserve serves (model uri ``scorer.json``). MLServer imports it from this
  repository, so pass ``pythonpath=REPO_ROOT``.

``parallel_workers`` (server-level ``settings.json`` field, env ``MLSERVER_PARALLEL_WORKERS``):
the default is 1 (``mlserver.settings.DEFAULT_PARALLEL_WORKERS``), i.e. the HTTP/gRPC front-end
process plus ONE inference worker process fed over multiprocessing queues; 0 disables the pool
and predicts inside the front-end process; N > 0 spawns N workers. MLServer's parallel-inference
guide explains the pool as a way around the GIL (one Python process uses one core) and warns that
the IPC hop can dominate for lightweight models. Seldon's performance-tuning guide for MLServer
says to set ``parallel_workers`` in line with the CPU cores given to the server, so the documented
best setting for a 2-core machine is ``parallel_workers=2`` (one inference process per core).
For a model as light as a logistic-regression pipeline the IPC warning applies: in our runs
``parallel_workers=0`` served about as many or more requests than 1 or 2, in a third of the RSS.

``debug`` is set to false in ``settings.json``: MLServer defaults it to true, which turns on a
uvicorn access-log line per request, which is not how it would run in production.
"""

from __future__ import annotations

import http.client
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tests.servers import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_NAME = "heart_risk"
SKLEARN_RUNTIME = "mlserver_sklearn.SKLearnModel"
SCORER_RUNTIME = "bench.mlserver_scorer_runtime.LinearScorerRuntime"
N_FEATURES = 13
MLSERVER_VERSION = "1.7.1"
# uvloop>=0.22 breaks MLServer 1.7.1's inference workers ("There is no current event loop in
# thread 'MainThread'" in parallel/worker.py; SeldonIO/MLServer#2286), so pin the last good one.
_PINS = {
    "mlserver": MLSERVER_VERSION,
    "mlserver-sklearn": MLSERVER_VERSION,
    "uvloop": "0.21.0",
}
DEFAULT_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "medserve-bench"
# Loopback probes must never go through an HTTP proxy taken from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def ensure_mlserver_venv(root: Path) -> Path:
    """Create (once) root/mlserver-venv with MLServer + sklearn runtime; return `mlserver` path.

    scikit-learn is pinned to this venv's version so joblib-pickled models load unchanged.
    """
    venv = root / "mlserver-venv"
    python, exe = venv / "bin" / "python", venv / "bin" / "mlserver"
    pins = {**_PINS, "scikit-learn": importlib.metadata.version("scikit-learn")}
    probe = "import importlib.metadata as m, mlserver_sklearn\n" + "".join(
        f"assert m.version({name!r}) == {version!r}\n" for name, version in pins.items()
    )
    if exe.is_file() and subprocess.run([python, "-c", probe], capture_output=True).returncode == 0:
        return exe
    uv = shutil.which("uv")
    if uv is None:
        raise RuntimeError("uv is not on PATH")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([uv, "venv", "--python", "3.11", str(venv)], check=True)
    requirements = [f"{name}=={version}" for name, version in pins.items()]
    install = [uv, "pip", "install", "--compile-bytecode", "--python", str(python)]
    subprocess.run([*install, *requirements], check=True)
    return exe


def _write_settings(
    model_path: Path,
    workdir: Path,
    port_http: int,
    port_grpc: int,
    parallel_workers: int | None,
    implementation: str = SKLEARN_RUNTIME,
) -> None:
    settings: dict[str, object] = {
        "debug": False,
        "host": "127.0.0.1",
        "http_port": port_http,
        "grpc_port": port_grpc,
        "metrics_port": free_port(),
        "metrics_dir": str(workdir / ".metrics"),
        "environments_dir": str(workdir / ".envs"),
    }
    if parallel_workers is not None:
        settings["parallel_workers"] = parallel_workers
    model_settings = {
        "name": MODEL_NAME,
        "implementation": implementation,
        "parameters": {"uri": str(model_path.resolve())},
    }
    (workdir / "settings.json").write_text(json.dumps(settings, indent=2))
    (workdir / "model-settings.json").write_text(json.dumps(model_settings, indent=2))


def _ready(url: str) -> bool:
    try:
        with _OPENER.open(url, timeout=2) as resp:
            return resp.status == 200
    except (OSError, http.client.HTTPException):  # URLError is an OSError
        return False


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM the process group, wait for the leader, then SIGKILL whatever is left."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextmanager
def serve_mlserver(
    model_path: Path,
    workdir: Path,
    port_http: int,
    port_grpc: int,
    parallel_workers: int | None,
    mlserver_exe: Path | None = None,
    startup_timeout_s: float = 120.0,
    implementation: str = SKLEARN_RUNTIME,
    pythonpath: Path | None = None,
) -> Iterator[str]:
    """Run `mlserver start workdir` serving `model_path` as "heart_risk"; yield the base URL.

    `model_path` is the file the runtime `implementation` loads (`pipeline.joblib` for
    SKLEARN_RUNTIME, `scorer.json` for SCORER_RUNTIME). `parallel_workers=None` keeps MLServer's
    default; `mlserver_exe` defaults to the venv under DEFAULT_ROOT. The caller's PYTHONPATH is
    never passed on; `pythonpath` (e.g. REPO_ROOT, for SCORER_RUNTIME) becomes the server's.
    The server's pid goes to workdir/mlserver.pid, its output to workdir/mlserver.log.
    """
    exe = mlserver_exe or ensure_mlserver_venv(DEFAULT_ROOT)
    workdir.mkdir(parents=True, exist_ok=True)
    _write_settings(model_path, workdir, port_http, port_grpc, parallel_workers, implementation)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MLSERVER_") and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath.resolve())
    base_url = f"http://127.0.0.1:{port_http}"
    log_path = workdir / "mlserver.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(exe), "start", str(workdir)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        (workdir / "mlserver.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + startup_timeout_s
        while not _ready(f"{base_url}/v2/models/{MODEL_NAME}/ready"):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"MLServer not ready (exit {proc.poll()}), {log_path}:\n{tail}")
            time.sleep(0.25)
        yield base_url
    finally:
        stop_group(proc)


def settings_of(workdir: Path) -> dict[str, Any]:
    """The server `settings.json` `serve_mlserver` wrote into `workdir` (ports, workers)."""
    return json.loads((workdir / "settings.json").read_text())


def v2_request_body(
    rows: list[list[float]], input_name: str = "input-0", output: str = "predict_proba"
) -> bytes:
    """Open Inference Protocol v2 JSON request: one FP64 input [n, 13], asking for `output`."""
    if not rows or any(len(row) != N_FEATURES for row in rows):
        raise ValueError(f"need at least one row, each with {N_FEATURES} features")
    request = {
        "inputs": [
            {
                "name": input_name,
                "shape": [len(rows), N_FEATURES],
                "datatype": "FP64",
                "data": [float(x) for row in rows for x in row],
            }
        ],
        "outputs": [{"name": output}],
    }
    return json.dumps(request, separators=(",", ":")).encode()
