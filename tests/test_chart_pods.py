"""Each chart Deployment's container, run here as the kubelet would run it: the rendered env
(resource fields resolved like the Downward API does), the rendered `bentoml serve` target, a
read-only root filesystem, and then every probe the pod spec declares, on the port it names, must
pass against the real service. Only the bind addresses, ports and homes are moved to loopback and
temporary folders.

The read-only root is a private mount namespace (`unshare -m`, needs root, as the test setup's
apt-get does): every filesystem is remounted read-only - `/`, and `/tmp` when it is a mount of
its own, so a checkout under `/tmp` is read-only too - except the pod's home (its `state`
emptyDir), bind-mounted onto itself first; the pod's `/tmp` emptyDir is a folder in that home
(TMPDIR). The pod's init container (the copy of the baked model store into the writable home)
runs in it first.
"""

from __future__ import annotations

import base64
import json
import math
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from medserve.auth.settings import AuthSettings
from medserve.catalogue import SERVICES
from tests.chart_render import ROOT, of_kind, render, resource_name
from tests.conftest import companion_env
from tests.servers import ServiceProcess, medserve_service

PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def sandbox(writable: Path) -> tuple[str, ...]:
    """A command prefix running the rest with every filesystem read-only but `writable`."""
    read_only = ["/", *(["/tmp"] if os.path.ismount("/tmp") else [])]
    script = "; ".join(
        [
            "set -e",
            "mount --make-rprivate /",
            f"mount --bind '{writable}' '{writable}'",
            *(f"mount -o remount,bind,ro {mount}" for mount in read_only),
            'exec "$@"',
        ]
    )
    return ("unshare", "--mount", "sh", "-c", script, "read-only-root")


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    """The chart with its default values (and the test identity provider: chart_render)."""
    return render()


@pytest.fixture(scope="module")
def deployments(rendered: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return of_kind(rendered, "Deployment")


@pytest.fixture(scope="module")
def secrets(rendered: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return of_kind(rendered, "Secret")


# The session fixture giving each chart service's stored model (a new service adds its line);
# requested per pod, so one service's pod needs only its own model trained.
MODEL_FIXTURES = {
    "heart_risk": "heart_tag",
    "ecg_anomaly": "ecg_tag",
    "ct_pattern": "ct_trained",
    "respiratory_triage": "triage_tag",
}


def model_tag(request: pytest.FixtureRequest, model: str) -> str:
    trained = request.getfixturevalue(MODEL_FIXTURES[model])
    return str(trained["tag"] if isinstance(trained, dict) else trained)


def cpu_cores(quantity: str) -> int:
    """A CPU quantity as the Downward API gives it with divisor 1: rounded up to whole cores."""
    if quantity.endswith("m"):
        return math.ceil(int(quantity[:-1]) / 1000)
    return math.ceil(float(quantity))


def pod_env(
    container: dict[str, Any], secrets: dict[str, dict[str, Any]] | None = None
) -> dict[str, str]:
    """The container's environment as the kubelet resolves it: the CPU limit (Downward API) and
    keys of the chart's own Secrets (the CSRF key)."""
    env: dict[str, str] = {}
    for item in container["env"]:
        name = item["name"]
        if "value" in item:
            env[name] = item["value"]
            continue
        source = item["valueFrom"]
        if "resourceFieldRef" in source:
            assert source["resourceFieldRef"]["resource"] == "limits.cpu"
            env[name] = str(cpu_cores(container["resources"]["limits"]["cpu"]))
        else:
            reference = source["secretKeyRef"]
            data = (secrets or {})[reference["name"]]["data"]
            env[name] = base64.b64decode(data[reference["key"]]).decode()
    return env


@pytest.fixture(scope="module", params=sorted(SERVICES))
def pod(
    request: pytest.FixtureRequest,
    deployments: dict[str, dict[str, Any]],
    secrets: dict[str, dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dict[str, Any], ServiceProcess]]:
    model = request.param
    spec = deployments[resource_name(model)]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    # Stored first: the init container below copies the store as it is then.
    tags = {f"MEDSERVE_{model.upper()}_MODEL_TAG": model_tag(request, model)}
    # The chart pins companions to `<name>:latest` of the baked store; here the session's tags.
    tags |= companion_env(request, container["command"][2])
    inits = {c["name"]: c for c in spec["initContainers"]}
    init = inits["copy-baked-models"]
    home: Path = tmp_path_factory.mktemp(f"pod-{model}")
    env = pod_env(container, secrets)
    # The init container copies the image's baked store into the pod's writable home; here the
    # session's test store stands for the baked one and the pod home is a temporary folder.
    assert pod_env(init)["BENTOML_HOME"] == env["BENTOML_HOME"]
    env["BENTOML_HOME"] = str(home / "bentoml")
    baked = {"BAKED_BENTOML_HOME": os.environ["BENTOML_HOME"], "BENTOML_HOME": env["BENTOML_HOME"]}
    copied = subprocess.run([*sandbox(home), *init["command"]], env=os.environ | baked, text=True)
    assert copied.returncode == 0
    # The pod's own SQLite log gets its schema from the second init container (no shared DB).
    migrate = inits["migrate-database"]
    migrate_env = pod_env(migrate) | {"MEDSERVE_HOME": str(home), "HOME": str(home)}
    migrated = subprocess.run([*sandbox(home), *migrate["command"]], env=os.environ | migrate_env)
    assert migrated.returncode == 0
    (home / "tmp").mkdir()  # the pod's /tmp emptyDir
    env |= {
        "MEDSERVE_HOME": str(home),
        "HOME": str(home),
        "TMPDIR": str(home / "tmp"),
    }
    env |= tags
    # Bind to loopback here; medserve_service also moves the ports.
    env["MEDSERVE_HTTP_HOST"] = "127.0.0.1"
    target = container["command"][2]
    with medserve_service(target, home, dict(os.environ) | env, wrapper=sandbox(home)) as service:
        yield container, service


def test_every_probe_of_the_pod_passes_on_the_running_service(
    pod: tuple[dict[str, Any], ServiceProcess],
) -> None:
    container, service = pod
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in PROBES:
        check = container[probe]["httpGet"]
        assert check["port"] == "http" and "http" in ports, probe
        response = httpx.get(f"{service.url}{check['path']}", timeout=5)
        assert response.status_code == 200, (probe, check["path"], response.text)


def test_the_pod_serves_grpc_and_metrics_where_the_chart_says(
    pod: tuple[dict[str, Any], ServiceProcess],
) -> None:
    container, service = pod
    names = {p["name"] for p in container["ports"]}
    assert names == {"http", "grpc"}
    with grpc.insecure_channel(service.grpc_target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    metrics = httpx.get(f"{service.url}/metrics", timeout=5).text
    assert "medserve_model_info{" in metrics
    assert "medserve_drift_psi_threshold{" in metrics


def test_an_unknown_path_is_not_a_healthy_probe(pod: tuple[dict[str, Any], ServiceProcess]) -> None:
    """The probe check above could fail: a path the service does not serve is a 404."""
    _, service = pod
    assert httpx.get(f"{service.url}/healthcheck-typo", timeout=5).status_code == 404


def test_the_pod_env_resolves_as_the_kubelet_would(
    deployments: dict[str, dict[str, Any]],
    secrets: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The env the pods above ran with: the chart's CSRF Secret read, and the access-control
    settings accept it."""
    for deployment in deployments.values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = pod_env(container, secrets)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        auth = AuthSettings()
        assert auth.csrf_secret is not None and len(auth.csrf_secret) == 48
        assert auth.allowed_hosts == json.loads(env["MEDSERVE_ALLOWED_HOSTS"])


def test_the_sandbox_is_read_only_but_for_the_pod_home(tmp_path: Path) -> None:
    """The pods above ran read-only, or this fails: the checkout (wherever it lives, /tmp too),
    /tmp itself and the root are read-only; only the pod's home is writable."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    probe = "; ".join(
        f"touch {where}/.probe 2>/dev/null && echo {name}-writable"
        for name, where in (("checkout", ROOT), ("tmp", elsewhere), ("root", "/"), ("home", home))
    )
    result = subprocess.run(
        [*sandbox(home), "sh", "-c", probe + "; true"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["home-writable"], result.stdout + result.stderr
