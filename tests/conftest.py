"""Session-wide isolation and shared fixtures.

Every test session gets its own MEDSERVE_HOME and BENTOML_HOME (set here, before anything imports
`bentoml`, which reads BENTOML_HOME at import time).
"""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# pytest imports this file as `conftest`; test modules importing its constants import it again
# as `tests.conftest`. Both must share one home, or the environment would point at a second,
# never-migrated one while the fixtures use the first.
_TWIN = sys.modules.get("tests.conftest" if __name__ == "conftest" else "conftest")
_SESSION_HOME: Path = getattr(_TWIN, "_SESSION_HOME", None) or Path(
    tempfile.mkdtemp(prefix="medserve-tests-")
)
os.environ["MEDSERVE_HOME"] = str(_SESSION_HOME)
os.environ["BENTOML_HOME"] = str(_SESSION_HOME / "bentoml")
# One local signing key for the session: services started by tests trust `tests.auth_tokens`.
os.environ["MEDSERVE_AUTH_LOCAL_KEY_FILE"] = str(_SESSION_HOME / "auth" / "local-signing-key.pem")
os.environ.pop("MEDSERVE_AUTH_MODE", None)
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

import pytest  # noqa: E402

from tests.databases import PostgresCluster, postgres_cluster  # noqa: E402
from tests.servers import (  # noqa: E402
    ServiceProcess,
    free_ports,
    medserve_service,
    running_process,
    upgrade_once,
    wait_for_http,
)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`pytest -n N` hands out whole files, some bound together (tests/xdist_scheduling.py)."""
    from tests.xdist_scheduling import BoundFileScheduling

    return BoundFileScheduling(config, log)  # type: ignore[arg-type]


def trained_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, train: Callable[[], dict[str, str]]
) -> dict[str, str]:
    """`train()` (a dict with the model's "tag") once per test run: under pytest-xdist the first
    worker to ask trains and exports the model beside the workers' temporary folders; the others
    wait for it and import that model into their own session's store."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return train()
    import bentoml

    shared = tmp_path_factory.getbasetemp().parent  # one folder per run, shared by its workers
    result, archive = shared / f"{name}.json", shared / f"{name}.bentomodel"
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if result.exists():
            trained: dict[str, str] = json.loads(result.read_text())
            bentoml.models.import_model(str(archive))
            return trained
        trained = train()
        bentoml.models.export_model(trained["tag"], str(archive))
        result.write_text(json.dumps(trained))
        return trained


def run_train_job(
    model: str, env: dict[str, str], *flags: str, timeout_s: float = 900
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`python -m ray_jobs.train MODEL FLAGS` as a Ray job driver (the RayJobs' entrypoint),
    asserted to succeed: (the process, its "trained" event)."""
    result = subprocess.run(
        [sys.executable, "-m", "ray_jobs.train", model, *flags],
        capture_output=True, text=True, timeout=timeout_s, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    line = next(x for x in reversed(result.stdout.splitlines()) if '"event": "trained"' in x)
    return result, json.loads(line[line.index("{") :])


HEART_TARGET = "bentos.heart_risk:HeartRisk"
ECG_TARGET = "bentos.ecg_anomaly:EcgAnomaly"
# Small and quick, yet enough for the autoencoder to separate the classes (MEDSERVE_ECG_TRAIN_*).
ECG_TEST_TRAINING = {
    "normal_beats": 600,
    "abnormal_beats_per_class": 90,
    "epochs": 40,
    "batch_size": 32,
}


@pytest.fixture(scope="session")
def session_home() -> Path:
    return _SESSION_HOME


@pytest.fixture(scope="session", autouse=True)
def session_database() -> str:
    """The session's default database, migrated once (as `medserve up` does): code that opens
    the log in-process (training with feedback, the CLI) finds the schema current."""
    from medserve.settings import Settings

    url = Settings(home=_SESSION_HOME).resolved_database_url
    upgrade_once(url)
    return url


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster on 127.0.0.1 for the session (tests/databases.py)."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database of each backend (not migrated)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'log.sqlite3'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.database()


@pytest.fixture
def database(empty_database: str) -> str:
    """The URL of a migrated, empty database of each backend."""
    upgrade_once(empty_database)
    return empty_database


@pytest.fixture(scope="session")
def heart_tag() -> str:
    """A heart model trained once per session into the session's model store."""
    from training.heart_risk import HeartTrainConfig, train

    return train(HeartTrainConfig()).tag


@pytest.fixture(scope="session")
def ecg_tag(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An ECG model trained once per run (small synthetic set) into the session's store."""
    from training.ecg_anomaly import EcgTrainConfig, train

    def train_small() -> dict[str, str]:
        return {"tag": str(train(EcgTrainConfig(**ECG_TEST_TRAINING)).tag)}

    return trained_once(tmp_path_factory, "ecg-model", train_small)["tag"]


@pytest.fixture(scope="session")
def triage_tag() -> str:
    """The respiratory KB published once per session into the session's store and mirrored
    into the session's database (migrated by `session_database`), as `medserve triage load-kb`
    does."""
    from medserve.respiratory.settings import get_triage_settings
    from medserve.settings import Settings
    from training.respiratory_triage import publish

    return publish(get_triage_settings().kb_path, Settings(home=_SESSION_HOME)).tag


# ---- companion models (catalogue `companions`, `ServedModel.companion_models`) -------------------
# The session fixture giving each companion model's stored tag. Tests starting a service set
# MEDSERVE_<NAME>_MODEL_TAG for every companion its model class declares (`companion_env`).
COMPANION_FIXTURES = {"respiratory_rules": "rules_tag"}


@pytest.fixture(scope="session")
def rules_tag() -> str:
    """Climate-occurrence rules mined once per session (synthetic data, seconds)."""
    from training.respiratory_rules import train

    return train().tag


def companion_env(request: pytest.FixtureRequest, target: str) -> dict[str, str]:
    """MEDSERVE_<NAME>_MODEL_TAG of each companion model the service `target` (a `bentoml
    serve` target) loads, from the session fixtures of COMPANION_FIXTURES."""
    module_name, class_name = target.split(":")
    service = getattr(importlib.import_module(module_name), class_name)
    return {
        f"MEDSERVE_{name.upper()}_MODEL_TAG": request.getfixturevalue(COMPANION_FIXTURES[name])
        for name in service.inner.model_class.companion_models
    }


def service_env(home: Path, **overrides: str) -> dict[str, str]:
    """Environment of a service process: isolated homes plus `MEDSERVE_*` overrides."""
    env = dict(os.environ)
    env["MEDSERVE_HOME"] = str(home)
    env["BENTOML_HOME"] = os.environ["BENTOML_HOME"]
    env.update(overrides)
    return env


TRIAGE_TARGET = "bentos.respiratory_triage:RespiratoryTriage"


@pytest.fixture(scope="module")
def triage_service(
    request: pytest.FixtureRequest, triage_tag: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """The triage service on the session's KB and climate rules, two workers."""
    home = tmp_path_factory.mktemp("triage-service")
    models = {"MEDSERVE_RESPIRATORY_TRIAGE_MODEL_TAG": triage_tag}
    models |= companion_env(request, TRIAGE_TARGET)
    with medserve_service(
        TRIAGE_TARGET, home, service_env(home, **models, MEDSERVE_WORKERS="2")
    ) as s:
        yield s


HEART_DRIFT_WINDOW = 200  # rows; tests send more, so the window is full after a burst


@pytest.fixture(scope="module")
def heart_service(
    heart_tag: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """The heart service with its own prediction log, small drift window, two workers."""
    home = tmp_path_factory.mktemp("heart-service")
    env = service_env(
        home,
        MEDSERVE_HEART_RISK_MODEL_TAG=heart_tag,
        MEDSERVE_DRIFT_WINDOW=str(HEART_DRIFT_WINDOW),
        MEDSERVE_DRIFT_MIN_SAMPLES="50",
        MEDSERVE_MAX_INSTANCES_PER_REQUEST="100",
        MEDSERVE_MAX_BODY_BYTES="65536",
        MEDSERVE_WORKERS="2",
    )
    with medserve_service(HEART_TARGET, home, env) as service:
        yield service


@pytest.fixture(scope="module")
def ecg_service(ecg_tag: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The ECG service with its own prediction log and a small drift window."""
    home = tmp_path_factory.mktemp("ecg-service")
    env = service_env(
        home,
        MEDSERVE_ECG_ANOMALY_MODEL_TAG=ecg_tag,
        MEDSERVE_DRIFT_WINDOW="200",
        MEDSERVE_DRIFT_MIN_SAMPLES="50",
        MEDSERVE_MAX_INSTANCES_PER_REQUEST="200",
    )
    with medserve_service(ECG_TARGET, home, env) as service:
        yield service


@dataclass(frozen=True)
class RayHead:
    """A local Ray head: `address` for drivers (RAY_ADDRESS), `dashboard_url` for `ray job`."""

    address: str
    dashboard_url: str

    def env(self) -> dict[str, str]:
        """Environment for a driver that should join this head instead of starting a Ray."""
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    """One local Ray head (GCS + job server) on loopback for the session's Ray tests."""
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's unix sockets
    # Every fixed default port chosen too: under pytest-xdist each worker may run a head.
    dashboard, gcs, client, agent = free_ports(4)
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_ENABLE_UV_RUN_RUNTIME_ENV="0")
    cmd = [
        str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
        f"--port={gcs}", "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
        "--include-dashboard=true", "--num-cpus=2", "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]  # fmt: skip
    log = tmp_path_factory.mktemp("ray") / "ray-head.log"
    with running_process(cmd, log, env=env, grace_s=20):
        url = f"http://127.0.0.1:{dashboard}"
        wait_for_http(f"{url}/api/version", timeout_s=120)
        yield RayHead(address=f"127.0.0.1:{gcs}", dashboard_url=url)


# Small enough for CI on 2 cores (MEDSERVE_CT_TRAIN_*): 64 px, MobileNetV2 alpha 0.35, 2 eager
# epochs (tracing the training graphs cost more CPU than the whole run, and under load the fixture
# outlived the 10-minute test timeout), two backbones side by side (1 CPU each). Every backbone's
# build and ONNX export is tested on its own (test_ct_training.py).
CT_TEST_ARCHITECTURES = ("mobilenet_v2", "efficientnet_b0")
CT_TEST_TRAINING = {
    "image_size": "64",
    "mobilenet_alpha": "0.35",
    "epochs": "2",
    "patience": "2",
    "augment_copies": "1",
    "cpus_per_trial": "1",
    "run_eagerly": "true",
    "architectures": json.dumps(CT_TEST_ARCHITECTURES),
}
CT_TARGET = "bentos.ct_pattern:CtPattern"
TRIAGE_TARGET = "bentos.respiratory_triage:RespiratoryTriage"


@pytest.fixture(scope="session")
def ct_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset on disk in the `<label>/<patient>/*.dcm` layout."""
    from medserve.ct.synthetic import SyntheticCtConfig, write_dataset

    root = tmp_path_factory.mktemp("ct-dataset")
    write_dataset(
        SyntheticCtConfig(seed=11, nsip_patients=5, uip_patients=4, slices_per_patient=4, size=128),
        root,
    )
    return root


@pytest.fixture(scope="session")
def ct_trained(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The CT model trained once per run through the real Ray job entrypoint on the session's
    Ray head: {"tag", "report"} (the architecture comparison it printed)."""

    def train() -> dict[str, str]:
        ray_head: RayHead = request.getfixturevalue("ray_head")  # only the training worker's
        ct_dataset: Path = request.getfixturevalue("ct_dataset")
        env = dict(os.environ, **ray_head.env(), MEDSERVE_CT_TRAIN_DATA_DIR=str(ct_dataset))
        env |= {f"MEDSERVE_CT_TRAIN_{k.upper()}": v for k, v in CT_TEST_TRAINING.items()}
        result, trained = run_train_job("ct_pattern", env)
        return {"tag": trained["tag"], "report": result.stdout}

    return trained_once(tmp_path_factory, "ct-model", train)


@pytest.fixture(scope="module")
def ct_service(
    ct_trained: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """The CT service on the session's trained model, with a small drift window."""
    home = tmp_path_factory.mktemp("ct-service")
    env = service_env(
        home,
        MEDSERVE_CT_PATTERN_MODEL_TAG=ct_trained["tag"],
        MEDSERVE_DRIFT_WINDOW="20",
        MEDSERVE_DRIFT_MIN_SAMPLES="5",
        MEDSERVE_CT_MAX_IMAGE_BYTES="4000000",
    )
    with medserve_service(CT_TARGET, home, env) as service:
        yield service
