"""The Helm chart rendered by the real helm binary (tools/k8s_tools.py) for the default and the
production values: lint, strict schema validation of every rendered object (Kubernetes 1.37,
Prometheus Operator CRs), values rejected by values.schema.json, and the rendered objects
cross-checked against the service catalogue, the settings the code reads and the restricted Pod
Security Standard."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from cloudcoil.models.prometheus_operator import v1 as operator_v1

from medserve.catalogue import SERVICES
from medserve.serving.metrics import LATENCY_BUCKETS
from medserve.settings import Settings
from tests.chart_render import (
    CHART,
    PRODUCTION_VALUES,
    RELEASE,
    ROOT,
    helm,
    of_kind,
    render,
    resource_name,
)
from tests.pod_security import restricted_violations

KUBERNETES = "1.37"
VALUES = {"default": (), "production": (PRODUCTION_VALUES,)}
OPERATOR_GROUP = "monitoring.coreos.com/"


@pytest.fixture(scope="module", params=sorted(VALUES))
def values_files(request: pytest.FixtureRequest) -> tuple[Path, ...]:
    return VALUES[request.param]


@pytest.fixture(scope="module")
def documents(values_files: tuple[Path, ...]) -> list[dict[str, Any]]:
    return render(values_files)


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(deployment)["env"]}


def without_nones(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nones(v) for v in value]
    return value


def validate_operator_resource(document: dict[str, Any]) -> None:
    """Validate a Prometheus Operator CR with its published models; the models ignore unknown
    fields, so a field lost in the round trip (a typo, a wrong level) fails too."""
    model = getattr(operator_v1, document["kind"])
    parsed = model.model_validate(document)
    dumped = parsed.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert dumped == without_nones(document), f"{document['kind']} has unknown fields"


@pytest.mark.parametrize("name", sorted(VALUES))
def test_chart_lints_strictly(name: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    for path in VALUES[name]:
        args += ["-f", str(path)]
    result = helm(*args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rendered_object_is_strictly_valid(documents: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in documents}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert {"NetworkPolicy", "ServiceAccount"} <= kinds
    for document in documents:
        if document["apiVersion"].startswith(OPERATOR_GROUP):
            validate_operator_resource(document)
        else:
            kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_operator_validation_rejects_unknown_fields() -> None:
    """The round trip is strict, or the test above would prove nothing for operator CRs."""
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "endpoints": [{"port": "http", "path": "/metrics"}]},
    }
    validate_operator_resource(monitor)
    typo = monitor | {"spec": {"selector": {}, "endpoints": [{"port": "http", "pathh": "/m"}]}}
    with pytest.raises(AssertionError, match="unknown fields"):
        validate_operator_resource(typo)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("services[0].httpPort=80", "httpPort"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("modelStore.uri=http://bucket", "uri"),
        ("containerSecurityContext.allowPrivilegeEscalation=true", "allowPrivilegeEscalation"),
        ("podSecurityContext.runAsNonRoot=false", "runAsNonRoot"),
        ("serviceDefaults.autoscaling.minReplicas=0", "minReplicas"),
        ("settings.driftPsiThreshold=0", "driftPsiThreshold"),
        ("monitoring.prometheusRule.latencySloSeconds=0.3", "latencySloSeconds"),  # no bucket
        ("replicaCount=3", "replicaCount"),  # unknown keys are typos, not silently ignored
    ],
)
def test_schema_rejects_bad_values(setting: str, message: str) -> None:
    result = helm("template", RELEASE, str(CHART), "--set", setting, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_schema_latency_slos_are_the_histogram_bucket_bounds() -> None:
    """A p99 SLO between two bucket bounds could not be computed from the histogram."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["definitions"]["latencyBucket"]["enum"] == list(LATENCY_BUCKETS)


def test_a_model_store_needs_pinned_model_versions() -> None:
    """Pods that import `latest` would each run whatever was newest when they started."""
    result = helm(
        "template", RELEASE, str(CHART), "--set", "modelStore.uri=s3://models", check=False
    )
    assert result.returncode != 0
    assert "must pin a version" in result.stderr


def test_every_bentoml_service_in_bentos_is_in_the_chart_and_the_catalogue() -> None:
    targets = set()
    for path in sorted((ROOT / "bentos").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and any(
                "bentoml.service" in ast.unparse(d) for d in node.decorator_list
            ):
                targets.add(f"bentos.{path.stem}:{node.name}")
    assert targets, "no @bentoml.service found in bentos/"
    chart = {container(d)["command"][2] for d in of_kind(render(), "Deployment").values()}
    assert targets == chart == {e.target for e in SERVICES.values()}


def test_each_service_gets_its_deployment_services_hpa_and_pdb(
    documents: list[dict[str, Any]],
) -> None:
    deployments = of_kind(documents, "Deployment")
    services = of_kind(documents, "Service")
    hpas = of_kind(documents, "HorizontalPodAutoscaler")
    pdbs = of_kind(documents, "PodDisruptionBudget")
    assert len(deployments) == len(hpas) == len(pdbs) == len(SERVICES)
    assert len(services) == 2 * len(SERVICES)  # ClusterIP + headless gRPC
    for entry in SERVICES.values():
        name = resource_name(entry.model)
        deployment, main = deployments[name], container(deployments[name])
        assert main["command"][:3] == ["bentoml", "serve", entry.target]
        assert main["command"][main["command"].index("--port") + 1] == str(entry.http_port)
        ports = {p["name"]: p["containerPort"] for p in main["ports"]}
        assert ports == {"http": entry.http_port, "grpc": entry.grpc_port}
        env = env_of(deployment)
        assert env["MEDSERVE_GRPC_PORT"] == str(entry.grpc_port)
        assert env["MEDSERVE_HTTP_HOST"] == env["MEDSERVE_GRPC_HOST"] == "0.0.0.0"
        assert f"MEDSERVE_{entry.model.upper()}_MODEL_TAG" in env
        assert "resources" in main and main["resources"]["limits"]["memory"]
        service_ports = {p["name"]: p["port"] for p in services[name]["spec"]["ports"]}
        assert service_ports == {"http": entry.http_port, "grpc": entry.grpc_port}
        assert services[f"{name}-grpc"]["spec"]["clusterIP"] == "None"
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert services[name]["spec"]["selector"] == selector
        assert pdbs[name]["spec"]["selector"]["matchLabels"] == selector
        assert hpas[name]["spec"]["scaleTargetRef"]["name"] == name
        assert "replicas" not in deployment["spec"]  # the HPA owns the replica count
        spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        hard = {c["topologyKey"]: c["whenUnsatisfiable"] for c in spread}
        assert hard == {
            "topology.kubernetes.io/zone": "ScheduleAnyway",  # a lost zone must not block
            "kubernetes.io/hostname": "DoNotSchedule",
        }
        assert all(c["labelSelector"]["matchLabels"] == selector for c in spread)


def test_pods_run_on_the_arm64_pool_with_its_selectors_and_tolerations() -> None:
    for values, extra in ((), {}), ((PRODUCTION_VALUES,), None):
        for deployment in of_kind(render(values), "Deployment").values():
            pod = deployment["spec"]["template"]["spec"]
            assert pod["nodeSelector"]["kubernetes.io/arch"] == "arm64"
            if extra is None:  # production: the node group, its taint and an affinity
                assert "eks.amazonaws.com/nodegroup" in pod["nodeSelector"]
                assert pod["tolerations"][0]["key"] == "medserve.io/serving"
                assert "nodeAffinity" in pod["affinity"]
            else:
                assert "tolerations" not in pod and "affinity" not in pod


def test_pods_meet_the_restricted_pod_security_standard(documents: list[dict[str, Any]]) -> None:
    """The restricted profile's rules on every pod template (init containers included), no
    added capability at all, and a read-only root filesystem with writable emptyDirs."""
    for deployment in of_kind(documents, "Deployment").values():
        template = deployment["spec"]["template"]
        pod = template["spec"]
        assert restricted_violations(template) == []
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False  # the services never call the API
        assert all(set(v) <= {"name", "emptyDir"} for v in pod["volumes"])
        for c in pod["containers"] + pod.get("initContainers", []):
            assert not c["securityContext"]["capabilities"].get("add")
            assert "hostPort" not in str(c.get("ports", []))
        mounts = {m["mountPath"] for m in container(deployment)["volumeMounts"]}
        env = env_of(deployment)
        # Everything the service writes lands on an emptyDir: BentoML writes into its home.
        assert {"/tmp", env["MEDSERVE_HOME"]} <= mounts
        assert env["HOME"] == "/tmp"
        assert env["BENTOML_HOME"].startswith(env["MEDSERVE_HOME"] + "/")


def test_baked_models_are_copied_to_the_pod_home_only_without_a_model_store() -> None:
    """The copy is tested for real in tests/test_chart_pods.py; with S3 the pod imports."""
    for values, baked in (((), True), ((PRODUCTION_VALUES,), False)):
        for deployment in of_kind(render(values), "Deployment").values():
            pod = deployment["spec"]["template"]["spec"]
            assert ("initContainers" in pod) is baked
            if baked:
                (init,) = pod["initContainers"]
                init_env = {e["name"]: e["value"] for e in init["env"]}
                assert init_env["BENTOML_HOME"] == env_of(deployment)["BENTOML_HOME"]
                assert init_env["BAKED_BENTOML_HOME"] == "/home/bentoml"
                assert init["image"] == container(deployment)["image"]


def test_pod_env_names_are_settings_the_code_reads(documents: list[dict[str, Any]]) -> None:
    """A misspelt MEDSERVE_* variable would be ignored silently by pydantic-settings."""
    known = {f"MEDSERVE_{field.upper()}" for field in Settings.model_fields}
    known |= {f"MEDSERVE_{m.upper()}_MODEL_{k}" for m in SERVICES for k in ("TAG", "URI")}
    for deployment in of_kind(documents, "Deployment").values():
        names = {n for n in env_of(deployment) if n.startswith("MEDSERVE_")}
        assert names <= known, names - known
        cpu = env_of(deployment)["MEDSERVE_CPU_LIMIT"]["resourceFieldRef"]
        assert cpu == {"resource": "limits.cpu", "divisor": "1"}


def test_pod_env_values_parse_as_the_settings_they_set(
    documents: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Values the settings would refuse (a pod crash-looping at start) fail here instead."""
    for deployment in of_kind(documents, "Deployment").values():
        plain = {k: v for k, v in env_of(deployment).items() if isinstance(v, str)}
        for name, value in plain.items():
            monkeypatch.setenv(name, value)
        settings = Settings()
        assert str(settings.home) == plain["MEDSERVE_HOME"]
        assert settings.grpc_port == int(plain["MEDSERVE_GRPC_PORT"])
        assert settings.drift_window == int(plain["MEDSERVE_DRIFT_WINDOW"])


def test_production_imports_pinned_models_from_s3_with_irsa_and_a_secret_url() -> None:
    documents = render((PRODUCTION_VALUES,))
    (account,) = of_kind(documents, "ServiceAccount").values()
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role.endswith(":role/medserve-serving")
    assert not of_kind(documents, "Secret")  # the URL comes from an existing Secret
    for entry in SERVICES.values():
        deployment = of_kind(documents, "Deployment")[resource_name(entry.model)]
        env = env_of(deployment)
        tag = env[f"MEDSERVE_{entry.model.upper()}_MODEL_TAG"]
        name, version = tag.split(":")
        assert name == entry.model and version != "latest"
        uri = env[f"MEDSERVE_{entry.model.upper()}_MODEL_URI"]
        # The layout model_store.export_model writes: <uri>/<name>/<version>.bentomodel
        assert uri == f"s3://medserve-models/{name}/{version}.bentomodel"
        assert env["MEDSERVE_DATABASE_URL"]["secretKeyRef"]["name"] == "medserve-prediction-log"
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "medserve"


def test_an_inline_database_url_becomes_a_secret_not_an_env_value() -> None:
    url = "postgresql+psycopg://u:p@db:5432/medserve"
    documents = render(set_values=[f"predictionLog.url={url}"])
    (secret,) = of_kind(documents, "Secret").values()
    assert secret["stringData"]["url"] == url
    for deployment in of_kind(documents, "Deployment").values():
        reference = env_of(deployment)["MEDSERVE_DATABASE_URL"]["secretKeyRef"]
        assert reference == {"name": secret["metadata"]["name"], "key": "url"}
        assert url not in str(deployment)


def test_network_policy_admits_only_service_ports_and_prometheus(
    documents: list[dict[str, Any]],
) -> None:
    policies = of_kind(documents, "NetworkPolicy")
    deployments = of_kind(documents, "Deployment")
    assert set(policies) == set(deployments)
    for name, policy in policies.items():
        spec = policy["spec"]
        assert spec["podSelector"] == deployments[name]["spec"]["selector"]
        assert spec["policyTypes"] == ["Ingress"]
        clients, scrapes = spec["ingress"]
        assert {p["port"] for p in clients["ports"]} == {"http", "grpc"}
        assert [p["port"] for p in scrapes["ports"]] == ["http"]
        assert "prometheus" in str(scrapes["from"])
