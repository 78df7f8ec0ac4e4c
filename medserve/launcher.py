"""`medserve up` and `medserve serve`: start services, train what is missing, report progress.

`up` starts every service whose model is in the store at once, and trains the missing models in
one child process (`medserve.training_process`), quickest first, starting each service as soon as
its model arrives while the others keep training. The terminal gets one line per step and a bar
per training; the children's output (BentoML, TensorFlow, absl, Ray) goes to files under
`<MEDSERVE_HOME>/logs/`. The child shuts its local Ray down after the last model, so no idle Ray
workers stay beside the services. Ctrl-C or SIGTERM stops every child.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, NoReturn

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from medserve.auth.local import OperatorAccess
from medserve.auth.settings import get_auth_settings
from medserve.catalogue import SERVICES, ServiceEntry
from medserve.doctor import checks_table, failed, probe_host, service_ports, serving_checks
from medserve.settings import Settings
from medserve.training_process import (
    EVENT,
    ProgressReport,
    RayConnected,
    RayStopped,
    Trained,
    TrainingEvent,
    TrainingFailed,
)
from training.progress import TrainingProgress

# Training minutes measured on 2 cores (README "First run"); only their order is used: the
# quickest first, so the first service serves while the slow ones still train.
TRAINING_ORDER = (
    "respiratory_triage",
    "respiratory_rules",
    "heart_risk",
    "ecg_anomaly",
    "ct_pattern",
)
POLL_S = 0.25  # how often the loop looks at children and readiness while nothing else happens
STOP_GRACE_S = 30.0  # after SIGTERM, before SIGKILL
LOG_TAIL_LINES = 15
TRAINING_SPEED_WINDOW_S = 3600.0
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LaunchFailed(RuntimeError):
    """A step of `up` failed; `log` holds the details."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log


def training_order(models: Iterable[str]) -> list[str]:
    """The quickest trainings first; models not in `TRAINING_ORDER` last, by name."""
    rank = {name: i for i, name in enumerate(TRAINING_ORDER)}
    return sorted(models, key=lambda name: (rank.get(name, len(rank)), name))


def format_seconds(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    with contextlib.suppress(OSError), path.open("rb") as log:
        log.seek(0, os.SEEK_END)
        log.seek(max(0, log.tell() - 16_384))
        return "\n".join(log.read().decode("utf-8", "replace").splitlines()[-lines:])
    return ""


def open_log(path: Path) -> IO[bytes]:
    """A child's log, appended to, with a line marking this start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    log = path.open("ab")
    log.write(f"\n===== {datetime.now(UTC).isoformat(timespec='seconds')} =====\n".encode())
    log.flush()
    return log


# ----------------------------------------------------------------------------------- services


def service_bentoml_home(entry: ServiceEntry, settings: Settings) -> Path:
    """A BentoML home of the service's own whose `models` is the shared model store.

    BentoML empties `$BENTOML_HOME/prometheus_multiproc_dir` whenever a server starts, and the
    workers keep their metric files there: a service started later would wipe the metrics of
    those already running if they shared one home.
    """
    shared = Path(os.environ.get("BENTOML_HOME", settings.home / "bentoml")) / "models"
    shared.mkdir(parents=True, exist_ok=True)
    own = settings.home / "run" / entry.model / "bentoml"
    own.mkdir(parents=True, exist_ok=True)
    models = own / "models"
    if models.is_symlink() and models.resolve() != shared.resolve():
        models.unlink()  # BENTOML_HOME moved since the last start
    if not models.is_symlink():
        models.symlink_to(shared, target_is_directory=True)
    return own


@dataclass
class RunningService:
    """One `bentoml serve` child and what the summary table says about it."""

    entry: ServiceEntry
    http_port: int
    grpc_port: int
    host: str
    process: subprocess.Popen[bytes]
    log: Path | None  # None: its output goes to the terminal (`medserve serve`)
    started_at: float = field(default_factory=time.monotonic)
    ready_after_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def link(self) -> str:
        """The page to open: the service's own page, else its model card."""
        return self.base_url + (self.entry.pages[0] if self.entry.pages else "/model")

    def is_ready(self) -> bool:
        """/readyz answers 200 (the model is loaded in every worker) and gRPC accepts."""
        try:
            with _NO_PROXY.open(f"{self.base_url}/readyz", timeout=2) as response:
                if response.status != 200:
                    return False
        except (OSError, urllib.error.URLError):
            return False
        with contextlib.suppress(OSError), socket.create_connection((self.host, self.grpc_port), 2):
            return True
        return False


def start_service(
    entry: ServiceEntry,
    settings: Settings,
    *,
    workers: int | None,
    ports: tuple[int | None, int | None] = (None, None),
    log: Path | None = None,
) -> RunningService:
    """`bentoml serve` for `entry` in its own session (Ctrl-C reaches it through us), on
    `ports` (HTTP, gRPC) where given, else the catalogue's."""
    http_port, grpc_port = (
        port or default for port, default in zip(ports, service_ports(entry, settings), strict=True)
    )
    env = dict(
        os.environ,
        MEDSERVE_HTTP_PORT=str(http_port),
        MEDSERVE_GRPC_PORT=str(grpc_port),
        BENTOML_HOME=str(service_bentoml_home(entry, settings)),
    )
    if workers is not None:
        env["MEDSERVE_WORKERS"] = str(workers)
    command = [sys.executable, "-m", "bentoml", "serve", entry.target]
    command += ["--host", settings.http_host, "--port", str(http_port)]
    output = open_log(log) if log else None
    try:
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=True,
        )
    finally:
        if output:
            output.close()  # the child holds its own copy
    return RunningService(entry, http_port, grpc_port, probe_host(settings.http_host), process, log)


def check_alive(service: RunningService) -> None:
    code = service.process.poll()
    if code is not None:
        raise LaunchFailed(f"{service.entry.model} exited with code {code}", service.log)


def became_ready(service: RunningService, settings: Settings) -> bool:
    """Whether a starting service is ready now; raises if it exited or is past its deadline."""
    check_alive(service)
    if service.is_ready():
        return True
    waited = time.monotonic() - service.started_at
    if waited > settings.ready_timeout_s:
        raise LaunchFailed(
            f"{service.entry.model} not ready after {format_seconds(waited)} "
            "(MEDSERVE_READY_TIMEOUT_S)",
            service.log,
        )
    return False


def summary_table(services: Iterable[RunningService]) -> Table:
    table = Table(
        "service",
        caption="Every service: POST /predict, GET /model, /metrics, OIP v2 under /v2/models/; "
        "API docs at /docs, OpenAPI 3.1 at /openapi.json.",
    )
    for heading in ("URL", "API docs", "gRPC (OIP v2)"):  # links stay whole, never cut short
        table.add_column(heading, no_wrap=True)
    for service in services:
        docs = f"{service.base_url}/docs"
        table.add_row(
            service.entry.model, service.link, docs, f"{service.host}:{service.grpc_port}"
        )
    return table


def print_summary(
    console: Console, services: Iterable[RunningService], access: OperatorAccess
) -> None:
    """The services table, then how to get in: page links carrying the operator's token (as
    Jupyter prints its URL) and the token itself, printed whole (never wrapped or cut)."""
    services = list(services)
    console.print(summary_table(services))
    for service in services:
        if service.entry.pages:
            link = access.page_link(service.link)
            console.print(f"{service.entry.model}: {link}", highlight=False, soft_wrap=True)
    for line in access.lines():
        console.print(line, highlight=False, soft_wrap=True, markup=False)


# ----------------------------------------------------------------------------------- training


@dataclass
class TrainingRun:
    """The training child and the events it writes to our end of a pipe."""

    process: subprocess.Popen[bytes]
    events_fd: int
    log: Path
    pending: bytes = b""
    closed: bool = False

    @classmethod
    def start(cls, models: list[str], log: Path) -> TrainingRun:
        read_fd, write_fd = os.pipe()
        output = open_log(log)
        command = [sys.executable, "-m", "medserve.training_process", "--events-fd"]
        try:
            process = subprocess.Popen(
                [*command, str(write_fd), *models],
                pass_fds=(write_fd,),
                # Unbuffered, and Ray's prefixes without colour codes: the output is a file.
                env=dict(os.environ, PYTHONUNBUFFERED="1", RAY_COLOR_PREFIX="0"),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            os.close(write_fd)
            output.close()
        return cls(process, read_fd, log)

    def events(self, timeout_s: float) -> list[TrainingEvent]:
        """The events that arrive within `timeout_s` (waits no longer once one arrives)."""
        if self.closed:  # the child is exiting: wait for that instead
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout_s)
            return []
        readable, _, _ = select.select([self.events_fd], [], [], timeout_s)
        if not readable:
            return []
        chunk = os.read(self.events_fd, 65_536)
        if not chunk:
            self.closed = True
            os.close(self.events_fd)
            return []
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        return [EVENT.validate_json(line) for line in lines if line.strip()]


@dataclass
class TrainingBars:
    """One bar per training; a training of parallel parts (CT backbones) shows their sum."""

    progress: Progress
    tasks: dict[str, TaskID] = field(default_factory=dict)
    parts: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)

    @classmethod
    def on(cls, console: Console, clock: Callable[[], float] | None = None) -> TrainingBars:
        progress = Progress(
            SpinnerColumn(),
            TextColumn("training [bold]{task.description}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[phase]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            # The speed behind the ETA over the whole training: a CT epoch takes longer than
            # rich's default 30 s window, which then holds no progress and shows no ETA.
            speed_estimate_period=TRAINING_SPEED_WINDOW_S,
            get_time=clock,
            refresh_per_second=2,  # the default 10 took 3 % of a core beside the trainings
        )
        return cls(progress)

    def update(self, report: TrainingProgress) -> None:
        model = report.model
        if model not in self.tasks:
            self.tasks[model] = self.progress.add_task(model, total=None, phase="")
        parts = self.parts.setdefault(model, {})
        if report.total is not None:
            parts[report.part] = (report.completed, report.total)
        completed, total = sum_parts(parts.values())
        self.progress.update(
            self.tasks[model], completed=completed, total=total, phase=report.phase
        )

    def finish(self, model: str) -> None:
        if model in self.tasks:
            self.progress.remove_task(self.tasks.pop(model))


def sum_parts(parts: Iterable[tuple[int, int]]) -> tuple[int, int | None]:
    """(completed, total) over a training's parts; total None while no part has a count."""
    counted = list(parts)
    if not counted:
        return 0, None
    return sum(done for done, _ in counted), sum(total for _, total in counted)


# ----------------------------------------------------------------------------------- launcher


def report_failure(console: Console, failure: LaunchFailed) -> None:
    console.print(f"[red]✗[/] {failure}", highlight=False)
    if failure.log is not None:
        console.print(f"last lines of {failure.log}:\n{log_tail(failure.log)}", markup=False)


# Ctrl-C may arrive twice (the terminal signals make, uv and us, and uv forwards it), and a
# closed terminal sends SIGHUP to us alone (the children run in sessions of their own).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt_once(signum: int, frame: FrameType | None) -> None:
    """The first stop signal interrupts; later ones are ignored, so the stop runs to its end."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


@contextlib.contextmanager
def stop_signals_interrupt_once() -> Iterator[None]:
    """Inside the block the first SIGINT, SIGTERM or SIGHUP raises KeyboardInterrupt and the
    rest are ignored: the caller stops its children inside the block, uninterrupted."""
    previous = {sig: signal.signal(sig, _interrupt_once) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_processes(processes: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every child's session, then SIGKILL whatever outlives the grace period.

    Stop signals are ignored meanwhile: interrupting the stop would leave children.
    """
    running = [p for p in processes if p.poll() is None]
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        for process in running:
            _signal_session(process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_session(process, signal.SIGKILL)
                process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _signal_session(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def upgrade_database(settings: Settings) -> str:
    """Migrate the shared database to this release's schema (what `medserve db upgrade` does)."""
    from medserve.database.commands import upgrade_command

    try:
        return upgrade_command(settings)
    except Exception as error:  # the message, not a traceback: a URL or a lock is the usual cause
        raise LaunchFailed(f"database upgrade failed: {type(error).__name__}: {error}") from None


class Launcher:
    """The `up` loop: services of stored models at once, the rest as their trainings end."""

    def __init__(
        self,
        settings: Settings,
        console: Console,
        *,
        workers: int | None = None,
    ) -> None:
        self.settings = settings
        self.console = console
        self.workers = workers
        self.entries = dict(SERVICES)
        self.services: dict[str, RunningService] = {}
        self.started = time.monotonic()
        self.training: TrainingRun | None = None
        self.training_done = False
        self.bars = TrainingBars.on(console)
        self.access: OperatorAccess | None = None

    def step(self, message: str, ok: bool = True) -> None:
        """One line per step, never wrapped by us (a URL must stay whole)."""
        mark = "[green]✓[/]" if ok else "[dim]·[/]"
        self.console.print(f"{mark} {message}", highlight=False, soft_wrap=True)

    def elapsed(self) -> str:
        return format_seconds(time.monotonic() - self.started)

    def run(self) -> int:
        """Start, supervise until a child exits or we are asked to stop, stop all; exit code."""
        with stop_signals_interrupt_once():
            try:
                self.start()
                self.supervise()
            except KeyboardInterrupt:
                self.console.print("stopping every service and training", highlight=False)
                return 0
            except LaunchFailed as failure:
                report_failure(self.console, failure)
                return 1
            finally:
                try:
                    self.bars.progress.stop()  # may fail writing to a terminal that is gone
                finally:
                    self.stop()

    def start(self) -> None:
        logs = self.settings.logs_dir
        self.console.print(
            f"[bold]medserve up[/]: {len(self.entries)} services; state in "
            f"{self.settings.home}, children's output in {logs}/",
            highlight=False,
            soft_wrap=True,
        )
        self.check_machine()
        # Once, before any service starts: services refuse a schema that is not current.
        self.step(upgrade_database(self.settings))
        # Before any service starts: in local mode this creates the signing key they all trust.
        self.access = OperatorAccess.for_operator(get_auth_settings())
        self.step(f"access control: {self.access.mode.value} mode")
        from medserve.model_store import has_model

        needed = {m for entry in self.entries.values() for m in entry.models}
        missing = training_order(m for m in needed if not has_model(f"{m}:latest"))
        for model in self.entries:
            self.start_if_stored(model, "in the model store")
        if missing:
            self.step(
                f"training {', '.join(missing)} (quickest first; each service starts when its "
                f"model is ready) - output in {logs / 'training.log'}",
                ok=False,
            )
            self.training = TrainingRun.start(missing, logs / "training.log")
            if self.console.is_terminal:  # bars redraw in place: nothing to show in a pipe
                self.bars.progress.start()
        else:
            self.training_done = True

    def check_machine(self) -> None:
        checks = serving_checks(self.settings, self.entries.values())
        problems = failed(checks)
        if problems:
            self.console.print(checks_table(problems))
            raise LaunchFailed("this machine is not ready to serve (see `medserve doctor`)")
        self.step("state folder writable, every port free")

    def start_if_stored(self, model: str, why: str) -> None:
        """Start `model`'s service unless started or one of the models it needs is missing."""
        from medserve.model_store import has_model

        entry = self.entries[model]
        if model not in self.services and all(has_model(f"{m}:latest") for m in entry.models):
            self.start_service(model, why)

    def start_service(self, model: str, why: str) -> None:
        entry = self.entries[model]
        log = self.settings.logs_dir / f"{model}.log"
        service = start_service(entry, self.settings, workers=self.workers, log=log)
        self.services[model] = service
        self.step(f"{model}: {why}; starting on port {service.http_port}", ok=False)

    def supervise(self) -> NoReturn:
        """Until a child fails (LaunchFailed) or we are asked to stop (KeyboardInterrupt)."""
        announced = False
        while True:
            self.follow_training()
            self.check_services()
            if not announced and self.training_done and self.all_ready():
                self.announce()
                announced = True

    def follow_training(self) -> None:
        training = self.training
        if training is None:
            time.sleep(POLL_S)
            return
        for event in training.events(POLL_S):
            self.on_event(event)
        if training.closed and training.process.poll() is not None:
            self.training = None
            self.training_done = True
            self.bars.progress.stop()
            if training.process.returncode != 0:
                raise LaunchFailed(
                    f"training stopped with exit code {training.process.returncode}", training.log
                )

    def on_event(self, event: TrainingEvent) -> None:
        if isinstance(event, ProgressReport):
            self.bars.update(event.progress)
        elif isinstance(event, RayConnected):
            where = "local Ray started" if event.local else "joined the Ray cluster in RAY_ADDRESS"
            self.step(f"{where} ({format_seconds(event.seconds)})")
        elif isinstance(event, Trained):
            self.on_trained(event)
        elif isinstance(event, TrainingFailed):
            log = self.training.log if self.training else None
            raise LaunchFailed(f"training {event.model} failed: {event.error}", log)
        elif isinstance(event, RayStopped):
            self.step("local Ray shut down" if event.local else "left the Ray cluster running")

    def on_trained(self, event: Trained) -> None:
        from medserve.model_store import has_model

        outcome = event.outcome
        self.bars.finish(outcome.model)
        metrics = outcome.metrics
        scores = ", ".join(
            f"{name} {metrics[name]:.3f}"
            for name in ("accuracy", "roc_auc")
            if isinstance(metrics.get(name), float)
        )
        figures = f" ({scores})" if scores else ""
        self.step(
            f"{outcome.model} trained in {format_seconds(event.seconds)}: {outcome.tag}{figures}"
        )
        if not has_model(outcome.tag):
            raise LaunchFailed(
                f"{outcome.tag} was trained on the Ray cluster but is not in this machine's "
                f"store: `medserve train {outcome.model} --export URI`, then `medserve import URI`"
            )
        for model, entry in self.entries.items():
            if outcome.model in entry.models:
                self.start_if_stored(model, "model trained")

    def check_services(self) -> None:
        for model, service in self.services.items():
            if service.ready_after_s is not None:
                check_alive(service)
            elif became_ready(service, self.settings):
                service.ready_after_s = time.monotonic() - self.started
                self.step(f"{model} ready after {self.elapsed()}: {service.link}")

    def all_ready(self) -> bool:
        return len(self.services) == len(self.entries) and all(
            s.ready_after_s is not None for s in self.services.values()
        )

    def announce(self) -> None:
        first = min(s.ready_after_s or 0.0 for s in self.services.values())
        self.step(
            f"all {len(self.services)} services ready after {self.elapsed()} "
            f"(the first after {format_seconds(first)})"
        )
        assert self.access is not None
        print_summary(self.console, self.services.values(), self.access)
        self.console.print(
            f"Ctrl-C stops every service; their logs are in {self.settings.logs_dir}/",
            highlight=False,
            soft_wrap=True,
        )

    def stop(self) -> None:
        processes = [s.process for s in self.services.values()]
        if self.training is not None:
            processes.append(self.training.process)
        stop_processes(processes)


def serve(
    entry: ServiceEntry,
    settings: Settings,
    console: Console,
    *,
    workers: int | None,
    ports: tuple[int | None, int | None],
) -> int:
    """`medserve serve`: one service in the foreground, its output on the terminal; the table
    once it is ready; until it exits, Ctrl-C, SIGTERM or SIGHUP."""
    try:
        console.print(upgrade_database(settings), highlight=False, soft_wrap=True)
    except LaunchFailed as failure:
        report_failure(console, failure)
        return 1
    with stop_signals_interrupt_once():
        service = start_service(entry, settings, workers=workers, ports=ports)
        try:
            while not became_ready(service, settings):
                time.sleep(POLL_S)
            print_summary(console, [service], OperatorAccess.for_operator(get_auth_settings()))
            return service.process.wait()
        except KeyboardInterrupt:
            return 0
        except LaunchFailed as failure:
            report_failure(console, failure)
            return 1
        finally:
            stop_processes([service.process])
