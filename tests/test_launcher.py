"""`medserve up` from an empty MEDSERVE_HOME (small training configs, catalogue ports moved by
an offset): services start as their models arrive, the terminal shows steps and no framework
output, the printed links work, the local Ray is gone once training ends, SIGTERM stops every
child. Plus the pieces on their own: training order, progress bars, a busy port, a Ray cluster
in RAY_ADDRESS that must survive the training."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
import tritonclient.grpc as tgrpc
from rich.console import Console

from medserve import model_store
from medserve.catalogue import SERVICES
from medserve.launcher import TrainingBars, TrainingRun, training_order
from medserve.training_process import ProgressReport, RayConnected, RayStopped, Trained
from tests.auth_tokens import client_headers
from tests.catalogue_ports import catalogue_ports, free_offset, listening_on
from tests.conftest import ECG_TEST_TRAINING, RayHead
from tests.heart_samples import VALID_PATIENT
from tests.servers import LOOPBACK, wait_for_http
from training.progress import TrainingProgress

UP_TIMEOUT_S = 900  # five trainings (two of them seconds) and four services on 2 shared cores
# Small trainings (MEDSERVE_*_TRAIN_*): the CT one with one backbone, the ECG one a few epochs.
SMALL_TRAINING = {
    **{f"MEDSERVE_ECG_TRAIN_{k.upper()}": str(v) for k, v in ECG_TEST_TRAINING.items()},
    "MEDSERVE_ECG_TRAIN_EPOCHS": "5",
    "MEDSERVE_CT_TRAIN_SYNTHETIC_NSIP_PATIENTS": "3",
    "MEDSERVE_CT_TRAIN_SYNTHETIC_UIP_PATIENTS": "3",
    "MEDSERVE_CT_TRAIN_SYNTHETIC_SLICES_PER_PATIENT": "4",
    "MEDSERVE_CT_TRAIN_SYNTHETIC_SIZE": "128",
    "MEDSERVE_CT_TRAIN_IMAGE_SIZE": "64",
    "MEDSERVE_CT_TRAIN_MOBILENET_ALPHA": "0.35",
    "MEDSERVE_CT_TRAIN_ARCHITECTURES": '["mobilenet_v2"]',
    "MEDSERVE_CT_TRAIN_EPOCHS": "2",
    "MEDSERVE_CT_TRAIN_AUGMENT_COPIES": "1",
    "MEDSERVE_CT_TRAIN_RUN_EAGERLY": "true",
}
# What TensorFlow, absl, oneDNN, CUDA, Ray and BentoML print; none of it may reach the terminal.
NOISE = re.compile(
    r"cuInit|cuda|oneDNN|absl|tensorflow|I0000|W0000|E0000|ray::|\(pid=|Ray instance|"
    r"WARNING|INFO|Traceback|BentoServer|uvicorn",
    re.IGNORECASE,
)


# ------------------------------------------------------------------------------ the pieces


def test_trainings_run_quickest_first_and_new_models_last() -> None:
    assert training_order(["zz_new", "ct_pattern", "heart_risk", "ecg_anomaly"]) == [
        "heart_risk",
        "ecg_anomaly",
        "ct_pattern",
        "zz_new",
    ]


def render(bars: TrainingBars) -> str:
    console = Console(file=io.StringIO(), width=160, force_terminal=True, color_system=None)
    console.print(bars.progress.get_renderable())
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_a_training_bar_counts_epochs_over_parallel_parts() -> None:
    bars = TrainingBars.on(Console(file=io.StringIO()))
    bars.update(TrainingProgress(model="ct_pattern", phase="slices"))
    assert "ct_pattern" in render(bars) and "slices" in render(bars)
    for part in ("mobilenet_v2", "vgg16"):
        bars.update(TrainingProgress(model="ct_pattern", phase="epochs", part=part, total=12))
    bars.update(
        TrainingProgress(model="ct_pattern", phase="epochs", part="vgg16", completed=5, total=12)
    )
    assert "5/24" in render(bars)
    # Early stopping ends a part before its last epoch: its total shrinks to what ran.
    bars.update(
        TrainingProgress(
            model="ct_pattern", phase="epochs", part="mobilenet_v2", completed=4, total=4
        )
    )
    assert "9/16" in render(bars) and "ETA" in render(bars)
    bars.finish("ct_pattern")
    assert "ct_pattern" not in render(bars)


def test_the_eta_comes_from_the_whole_training_even_with_epochs_longer_than_30_s() -> None:
    now = [0.0]
    bars = TrainingBars.on(Console(file=io.StringIO()), clock=lambda: now[0])
    for epoch in range(3):  # an epoch every 40 s
        now[0] = 40.0 * epoch
        report = TrainingProgress(model="ecg_anomaly", phase="epochs", completed=epoch, total=20)
        bars.update(report)
    # 2 epochs in 80 s: 18 left take 12 minutes.
    assert "2/20" in render(bars) and "ETA 0:12:00" in render(bars)


def test_up_refuses_at_once_when_a_port_is_taken(tmp_path: Path) -> None:
    offset = free_offset()
    taken = SERVICES["ct_pattern"].grpc_port + offset
    with listening_on(taken):
        result = subprocess.run(
            [sys.executable, "-m", "medserve.cli", "up"],
            capture_output=True, text=True, timeout=120,
            env=up_env(tmp_path / "home", offset),
        )  # fmt: skip
    assert result.returncode == 1
    assert f"in use: {taken} (gRPC)" in result.stdout + result.stderr
    assert "medserve doctor" in result.stderr
    assert not (tmp_path / "home" / "logs").exists()  # nothing was started


def test_serve_runs_one_service_and_prints_its_links_once_it_is_ready(
    heart_tag: str, tmp_path: Path
) -> None:
    offset = free_offset()
    env = dict(
        os.environ,
        MEDSERVE_HOME=str(tmp_path),
        MEDSERVE_PORT_OFFSET=str(offset),
        MEDSERVE_HEART_RISK_MODEL_TAG=heart_tag,
        COLUMNS="200",
    )
    with running_cli(["serve", "heart_risk"], env) as run:
        link = f"http://{LOOPBACK}:{SERVICES['heart_risk'].http_port + offset}/ui"
        run.wait_for(re.escape(link), timeout_s=300)
        assert run.has("schema upgraded from nothing to 0003")  # migrated before the start
        assert httpx.get(link, headers=client_headers(), timeout=10).status_code == 200
        grpc = f"{LOOPBACK}:{SERVICES['heart_risk'].grpc_port + offset}"
        assert run.has(re.escape(grpc)) and tgrpc.InferenceServerClient(grpc).is_server_ready()
        run.process.send_signal(signal.SIGTERM)
        assert run.process.wait(timeout=60) == 0
        wait_until(lambda: processes_of(tmp_path) == [], "end of every process", 60)


def test_training_on_a_cluster_in_ray_address_leaves_the_cluster_running(
    ray_head: RayHead, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in ray_head.env().items():
        monkeypatch.setenv(key, value)
    run = TrainingRun.start(["heart_risk"], tmp_path / "training.log")
    events = []
    deadline = time.monotonic() + 300
    while not (run.closed and run.process.poll() is not None):
        assert time.monotonic() < deadline, events
        events += run.events(1.0)
    assert run.process.returncode == 0, (tmp_path / "training.log").read_text()[-3000:]
    assert [type(e) for e in events if not isinstance(e, ProgressReport)] == [
        RayConnected,
        Trained,
        RayStopped,
    ]
    assert not events[0].local and not events[-1].local  # type: ignore[union-attr]
    phases = [e.progress.phase for e in events if isinstance(e, ProgressReport)]
    assert phases == ["cross-validation", "evaluating and saving"]
    (trained,) = [e for e in events if isinstance(e, Trained)]
    assert model_store.has_model(trained.outcome.tag)
    wait_for_http(f"{ray_head.dashboard_url}/api/version", timeout_s=10)
    nodes = httpx.get(f"{ray_head.dashboard_url}/nodes?view=summary", timeout=10).json()
    assert [n["raylet"]["state"] for n in nodes["data"]["summary"]] == ["ALIVE"]


# ------------------------------------------------------------------------------ a fresh `up`


def up_env(home: Path, offset: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BENTOML_HOME", "RAY_ADDRESS")}
    return (
        env
        | SMALL_TRAINING
        | {
            "MEDSERVE_HOME": str(home),  # its model store too: BENTOML_HOME is left unset
            "MEDSERVE_PORT_OFFSET": str(offset),
            "COLUMNS": "200",
        }
    )


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {timeout_s} s"
        time.sleep(0.2)


@dataclass
class CliRun:
    """A `medserve` command under test and its terminal output so far."""

    process: subprocess.Popen[str]
    home: Path
    offset: int
    lines: list[str] = field(default_factory=list)

    def wait_for(self, pattern: str, timeout_s: float) -> None:
        """Until a line matches `pattern`, while the command runs."""
        deadline = time.monotonic() + timeout_s
        while not self.has(pattern):
            assert self.process.poll() is None, f"the command exited:\n{self}"
            assert time.monotonic() < deadline, f"no {pattern!r} after {timeout_s} s:\n{self}"
            time.sleep(0.2)

    def has(self, pattern: str) -> bool:
        return any(re.search(pattern, line) for line in self.lines)

    def index(self, pattern: str) -> int:
        found = [i for i, line in enumerate(self.lines) if re.search(pattern, line)]
        assert found, f"no line matches {pattern!r}:\n{self}"
        return found[0]

    def __str__(self) -> str:
        return "\n".join(self.lines[-60:])


def processes_of(home: Path) -> list[psutil.Process]:
    """Every process on this machine started for this MEDSERVE_HOME (they inherit it)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("MEDSERVE_HOME") == str(home):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def is_ray(process: psutil.Process) -> bool:
    try:
        command = " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    return bool(re.search(r"raylet|gcs_server|ray::|ray/_private|dashboard", command))


@contextlib.contextmanager
def running_cli(arguments: list[str], env: dict[str, str]) -> Iterator[CliRun]:
    """`medserve ARGUMENTS` with its output collected line by line; stopped at the end, and
    whatever it left behind killed (only after a failed test can there be anything)."""
    home = Path(env["MEDSERVE_HOME"])
    process = subprocess.Popen(
        [sys.executable, "-m", "medserve.cli", *arguments],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env, start_new_session=True,
    )  # fmt: skip
    run = CliRun(process, home, int(env["MEDSERVE_PORT_OFFSET"]))
    assert process.stdout is not None
    threading.Thread(target=lambda: run.lines.extend(process.stdout), daemon=True).start()
    try:
        yield run
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for leftover in processes_of(home):
            leftover.kill()


def running_up(home: Path) -> contextlib.AbstractContextManager[CliRun]:
    return running_cli(["up"], up_env(home, free_offset()))


def test_a_burst_of_stop_signals_during_training_stops_the_training_and_its_local_ray(
    tmp_path: Path,
) -> None:
    """A closed terminal (SIGHUP) and a Ctrl-C that arrives twice (the terminal signals make,
    uv and us; uv forwards it): the first signal stops, the others must not cut the stop short."""
    with running_up(tmp_path / "home") as run:
        run.wait_for(r"✓ local Ray started", timeout_s=300)
        assert any(is_ray(p) for p in processes_of(run.home))  # the finder sees Ray's processes
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGINT, signal.SIGTERM):
            run.process.send_signal(sig)
        assert run.process.wait(timeout=120) == 0
        wait_until(lambda: processes_of(run.home) == [], "end of every process", 60)
    assert "stopping every service and training" in str(run)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliRun]:
    with running_up(tmp_path_factory.mktemp("up-home")) as run:
        run.wait_for(r"all \d services ready", UP_TIMEOUT_S)
        yield run


def test_each_service_starts_as_soon_as_its_model_is_trained(up: CliRun) -> None:
    order = ("respiratory_triage", "respiratory_rules", "heart_risk", "ecg_anomaly", "ct_pattern")
    trained = [up.index(rf"✓ {name} trained in ") for name in order]
    assert trained == sorted(trained), "quickest first"
    # The triage service needs its KB and its companion rules: it starts after both, not before.
    triage_starts = up.index(r"respiratory_triage: model trained; starting on port")
    assert trained[1] < triage_starts < trained[2]
    heart_starts = up.index(r"heart_risk: model trained; starting on port")
    assert trained[2] < heart_starts < trained[3]  # before the next training ends
    assert up.index(r"ecg_anomaly: model trained; starting") < trained[4]


def test_the_terminal_shows_steps_and_the_logs_hold_the_framework_output(up: CliRun) -> None:
    noisy = [line for line in up.lines if NOISE.search(line)]
    assert not noisy, noisy
    steps = [line for line in up.lines if line.startswith(("✓", "·"))]
    assert len(steps) >= 14, up  # ports, Ray up, 5 trained, 4 starting, 4 ready, Ray down, all
    assert len(up.lines) < len(steps) + 25, up  # the rest: header, summary table, last hint
    logs = up.home / "logs"
    training = (logs / "training.log").read_text()
    assert "Started a local Ray instance" in training
    assert re.search(r"tensorflow|oneDNN|cuInit", training)
    for name in SERVICES:
        assert "Starting production HTTP BentoServer" in (logs / f"{name}.log").read_text()


def test_every_printed_link_and_grpc_port_answers(up: CliRun) -> None:
    text = "\n".join(up.lines)
    assert "/docs" in text  # the API contract's page (issue 19), checked with the other links
    links = re.findall(rf"http://{LOOPBACK}:\d+/[\w/]*", text)
    assert len(set(links)) >= 3, text
    for link in set(links):
        response = httpx.get(link, headers=client_headers(), timeout=10)
        assert response.status_code == 200, link
    # The page links carry the operator's token once: opening one swaps it for the session
    # cookie and redirects to the page without it.
    page_links = set(re.findall(rf"http://{LOOPBACK}:\d+/\w+\?token=[\w.-]+", text))
    assert len(page_links) == sum(1 for entry in SERVICES.values() if entry.pages), text
    for link in page_links:
        with httpx.Client(follow_redirects=True, timeout=10) as browser:
            page = browser.get(link)
        assert page.status_code == 200 and "token" not in str(page.url), page.url
        assert [r.status_code for r in page.history] == [303]
    grpc_addresses = set(re.findall(rf"(?<!//){LOOPBACK}:\d+(?=\s)", text))
    assert len(grpc_addresses) == len(SERVICES), text
    for address in grpc_addresses:  # readiness is a probe: open without a token
        assert tgrpc.InferenceServerClient(address).is_server_ready(), address


def test_each_service_exports_its_own_metrics_only(up: CliRun) -> None:
    """Services sharing one BentoML home would share (and, starting, wipe) one metrics folder."""

    def url(model: str) -> str:
        return f"http://{LOOPBACK}:{SERVICES[model].http_port + up.offset}"

    response = httpx.post(
        f"{url('heart_risk')}/predict", json={"patients": [VALID_PATIENT]}, headers=client_headers()
    )
    assert response.status_code == 200
    metrics = httpx.get(f"{url('heart_risk')}/metrics").text
    series = r'^medserve_predictions_total\{[^}]*model="heart_risk"[^}]*\} (\S+)'
    assert sum(float(v) for v in re.findall(series, metrics, re.M)) >= 1, metrics[:3000]
    assert 'model="heart_risk"' not in httpx.get(f"{url('ecg_anomaly')}/metrics").text


def test_no_ray_process_is_left_once_training_has_ended(up: CliRun) -> None:
    assert up.index(r"✓ local Ray shut down") < up.index(rf"all {len(SERVICES)} services ready")
    ours = processes_of(up.home)
    assert any("bentoml" in " ".join(p.cmdline()) for p in ours)  # the finder finds ours
    assert [p for p in ours if is_ray(p)] == []


def test_sigterm_stops_every_child(up: CliRun) -> None:  # last: it ends the module's `up`
    children = psutil.Process(up.process.pid).children(recursive=True)
    assert len(children) >= len(SERVICES)
    up.process.send_signal(signal.SIGTERM)
    assert up.process.wait(timeout=120) == 0
    _, alive = psutil.wait_procs(children, timeout=60)
    assert alive == [], alive
    assert processes_of(up.home) == []
    from medserve.doctor import port_in_use

    assert not any(port_in_use(LOOPBACK, port) for port in catalogue_ports(up.offset))
