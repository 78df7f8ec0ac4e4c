"""The Helm chart rendered by the real helm binary (tools/k8s_tools.py) for the default values
(with the test identity provider, tests/chart_values/auth-oidc.yaml: the chart has none), the
production values and the oauth2-proxy example: lint, strict schema validation of every rendered
object (Kubernetes 1.37, Prometheus Operator CRs), values rejected by values.schema.json, and the
rendered objects cross-checked against the service catalogue, the settings the code reads (access
control included), the restricted Pod Security Standard, the deny-by-default NetworkPolicy."""

from __future__ import annotations

import ast
import base64
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as operator_v1

from medserve.auth.settings import AuthSettings
from medserve.catalogue import SERVICES
from medserve.serving.metrics import LATENCY_BUCKETS
from medserve.settings import Settings
from tests.chart_render import (
    AUTH_VALUES,
    CHART,
    OAUTH2_PROXY_VALUES,
    PRODUCTION_VALUES,
    RELEASE,
    ROOT,
    helm,
    of_kind,
    render,
    resource_name,
    values_args,
)
from tests.pod_security import restricted_violations

KUBERNETES = "1.37"
VALUES = {
    "default": (),  # values.yaml over tests/chart_values/auth-oidc.yaml (chart_render.values_args)
    "production": (PRODUCTION_VALUES,),
    "oauth2-proxy": (PRODUCTION_VALUES, OAUTH2_PROXY_VALUES),  # the example as documented
}
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
    result = helm("lint", "--strict", str(CHART), *values_args(VALUES[name]), check=False)
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
        ("auth.mode=local", "/auth/mode"),  # a per-machine signing key: not for a cluster
        ("auth.mode=off", "/auth/mode"),  # tests only
        ("auth.jwksUrl=", "/auth/jwksUrl"),  # oidc needs the identity provider's keys
        ("auth.trustedOrigins[0]=https://idp.example.org/path", "/auth/trustedOrigins/0"),
        ("auth.proxy.userHeader=x user", "/auth/proxy/userHeader"),
        ("networkPolicy.clientSelectors[0].ports=x", "/networkPolicy/clientSelectors/0"),
        ("grpc.tls.verifyClients=yes", "/grpc/tls/verifyClients"),
    ],
)
def test_schema_rejects_bad_values(setting: str, message: str) -> None:
    result = helm("template", RELEASE, str(CHART), *values_args(), "--set", setting, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_without_an_identity_provider_the_chart_refuses_to_render() -> None:
    """Fail closed at install (a plain `helm install`) rather than start pods that crash-loop or
    serve without access control: the schema names the missing values, and the templates say
    what they are when the schema is skipped."""
    plain = ("template", RELEASE, str(CHART))
    result = helm(*plain, check=False)
    assert result.returncode != 0
    for value in ("issuer", "audience", "jwksUrl"):
        assert f"at '/auth/{value}'" in result.stderr, result.stderr
    result = helm(*plain, "--skip-schema-validation", check=False)
    assert result.returncode != 0
    message = "auth.mode oidc needs auth.issuer, auth.audience and auth.jwksUrl"
    assert message in result.stderr, result.stderr
    lint = helm("lint", "--strict", str(CHART), check=False)
    assert lint.returncode != 0 and "/auth/issuer" in lint.stdout + lint.stderr


@pytest.mark.parametrize("mode", ["local", "off"])
def test_embedded_auth_modes_are_refused_even_without_the_schema(mode: str) -> None:
    args = ("template", RELEASE, str(CHART), *values_args(), "--set", f"auth.mode={mode}")
    result = helm(*args, "--skip-schema-validation", check=False)
    assert result.returncode != 0
    assert f'auth.mode must be oidc or proxy, not "{mode}"' in result.stderr


def test_proxy_mode_needs_the_network_policy() -> None:
    """The proxy's headers are the identity: without the policy any pod could forge them."""
    sets = ("--set", "auth.mode=proxy", "--set", "networkPolicy.enabled=false")
    result = helm("template", RELEASE, str(CHART), *values_args(), *sets, check=False)
    assert result.returncode != 0
    assert "auth.mode proxy needs networkPolicy.enabled" in result.stderr


def test_schema_latency_slos_are_the_histogram_bucket_bounds() -> None:
    """A p99 SLO between two bucket bounds could not be computed from the histogram."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["definitions"]["latencyBucket"]["enum"] == list(LATENCY_BUCKETS)


def test_a_model_store_needs_pinned_model_versions() -> None:
    """Pods that import `latest` would each run whatever was newest when they started."""
    args = ("template", RELEASE, str(CHART), *values_args(), "--set", "modelStore.uri=s3://models")
    result = helm(*args, check=False)
    assert result.returncode != 0
    assert "must pin a version" in result.stderr


# --------------------------------------------------------------------------- companion models


def services_file(path: Path, modify: dict[str, dict[str, Any]], pin: bool = False) -> Path:
    """A values file with values.yaml's services, `modify[name]` merged into an entry (helm
    --set would replace the whole list); `pin` gives every model a fixed version."""
    services = yaml.safe_load((CHART / "values.yaml").read_text())["services"]
    for entry in services:
        if pin:
            entry["modelTag"] = f"{entry['name']}:v1"
            entry["companionModels"] = {c: f"{c}:v1" for c in entry.get("companionModels", {})}
        entry.update(modify.get(entry["name"], {}))
    path.write_text(yaml.safe_dump({"services": services}))
    return path


def chart_companions(values_files: tuple[Path, ...]) -> dict[str, dict[str, str]]:
    services = {}
    for path in (CHART / "values.yaml", *values_files):
        for entry in (yaml.safe_load(path.read_text()) or {}).get("services", []):
            services[entry["name"]] = entry.get("companionModels", {})
    return services


@pytest.mark.parametrize("name", ["default", "production"])
def test_chart_companion_models_are_the_catalogue_companions(name: str) -> None:
    companions = chart_companions(VALUES[name])
    assert companions == {e.model: {c: companions[e.model][c] for c in e.companions}
                          for e in SERVICES.values()}  # fmt: skip
    assert any(companions.values()), "no service has a companion: the tests below prove nothing"


def test_companion_models_become_tag_env_and_an_annotation(tmp_path: Path) -> None:
    documents = render()
    for entry in SERVICES.values():
        deployment = of_kind(documents, "Deployment")[resource_name(entry.model)]
        env = env_of(deployment)
        tags = {k: v for k, v in env.items() if k.endswith("_MODEL_TAG")}
        assert tags == {
            f"MEDSERVE_{model.upper()}_MODEL_TAG": f"{model}:latest" for model in entry.models
        }
        assert not [k for k in env if k.endswith("_MODEL_URI")]  # baked store: nothing to import
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["medserve.io/model-tag"] == f"{entry.model}:latest"
        expected = {c: f"{c}:latest" for c in entry.companions}
        assert json.loads(annotations.get("medserve.io/companion-model-tags", "{}")) == expected
    # A companion the catalogue does not know yet is still rendered from the values alone.
    extra = services_file(
        tmp_path / "extra.yaml",
        {"heart_risk": {"companionModels": {"heart_calib": "heart_calib:v2"}}},
    )
    heart = of_kind(render((extra,)), "Deployment")[resource_name("heart_risk")]
    assert env_of(heart)["MEDSERVE_HEART_CALIB_MODEL_TAG"] == "heart_calib:v2"


def test_companion_models_are_pinned_and_imported_with_a_model_store(tmp_path: Path) -> None:
    companions = {"heart_risk": {"companionModels": {"heart_calib": "heart_calib:20261201-ab"}}}
    pinned = services_file(tmp_path / "pinned.yaml", companions, pin=True)
    documents = render((pinned,), set_values=["modelStore.uri=s3://models/prod/"])
    env = env_of(of_kind(documents, "Deployment")[resource_name("heart_risk")])
    assert env["MEDSERVE_HEART_RISK_MODEL_URI"] == "s3://models/prod/heart_risk/v1.bentomodel"
    assert env["MEDSERVE_HEART_CALIB_MODEL_TAG"] == "heart_calib:20261201-ab"
    uri = "s3://models/prod/heart_calib/20261201-ab.bentomodel"
    assert env["MEDSERVE_HEART_CALIB_MODEL_URI"] == uri
    # Own models pinned, a companion left at `latest`: refused, naming the companion.
    latest = {"heart_risk": {"companionModels": {"heart_calib": "heart_calib:latest"}}}
    floating = services_file(tmp_path / "floating.yaml", latest, pin=True)
    args = ("template", RELEASE, str(CHART), *values_args((floating,)))
    result = helm(*args, "--set", "modelStore.uri=s3://models", check=False)
    assert result.returncode != 0
    assert "services[heart_risk].companionModels.heart_calib must pin a version" in result.stderr
    assert helm(*args, check=False).returncode == 0  # without a store, `latest` is the baked one


@pytest.mark.parametrize(
    ("companions", "message"),
    [
        # Not a model name (helm's validator reports propertyNames under a wrong path).
        ({"Heart-Calib": "heart_calib:v1"}, "invalid propertyName 'Heart-Calib'"),
        ({"heart_calib": "heart_calib"}, "/services/0/companionModels/heart_calib"),  # no version
        ({"heart_calib": ["heart_calib:v1"]}, "/services/0/companionModels/heart_calib"),
    ],
)
def test_schema_refuses_bad_companion_models(
    companions: dict[str, Any], message: str, tmp_path: Path
) -> None:
    values = services_file(tmp_path / "bad.yaml", {"heart_risk": {"companionModels": companions}})
    result = helm("template", RELEASE, str(CHART), *values_args((values,)), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_a_companion_tag_must_name_its_model(tmp_path: Path) -> None:
    """MEDSERVE_HEART_CALIB_MODEL_TAG=other:v1 would load another model under that name: the
    template refuses it (the schema cannot compare a key with its value)."""
    wrong = {"heart_risk": {"companionModels": {"heart_calib": "heart_risk:v1"}}}
    values = services_file(tmp_path / "wrong.yaml", wrong)
    for extra in ((), ("--skip-schema-validation",)):
        args = ("template", RELEASE, str(CHART), *values_args((values,)), *extra)
        result = helm(*args, check=False)
        assert result.returncode != 0
        message = 'services[heart_risk].companionModels.heart_calib "heart_risk:v1" must be a tag'
        assert message in result.stderr, result.stderr


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
        for model in entry.models:  # its own model and its companions (catalogue)
            assert f"MEDSERVE_{model.upper()}_MODEL_TAG" in env
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
            inits = {c["name"]: c for c in pod.get("initContainers", [])}
            assert ("copy-baked-models" in inits) is baked
            if baked:
                init = inits["copy-baked-models"]
                init_env = {e["name"]: e["value"] for e in init["env"]}
                assert init_env["BENTOML_HOME"] == env_of(deployment)["BENTOML_HOME"]
                assert init_env["BAKED_BENTOML_HOME"] == "/home/bentoml"
                assert init["image"] == container(deployment)["image"]


def auth_env_names() -> set[str]:
    """The variables AuthSettings reads: MEDSERVE_AUTH_<FIELD>, or a field's own alias."""
    prefix = AuthSettings.model_config["env_prefix"]
    return {
        str(field.validation_alias or f"{prefix}{name}").upper()
        for name, field in AuthSettings.model_fields.items()
    }


def test_pod_env_names_are_settings_the_code_reads(documents: list[dict[str, Any]]) -> None:
    """A misspelt MEDSERVE_* variable would be ignored silently by pydantic-settings."""
    known = {f"MEDSERVE_{field.upper()}" for field in Settings.model_fields}
    known |= {
        f"MEDSERVE_{model.upper()}_MODEL_{k}"
        for entry in SERVICES.values()
        for model in entry.models  # companions are read by ModelSource.from_env too
        for k in ("TAG", "URI")
    }
    known |= auth_env_names()
    assert {"MEDSERVE_AUTH_JWKS_URL", "MEDSERVE_ALLOWED_HOSTS"} <= auth_env_names()
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
        auth = AuthSettings()  # refuses oidc without issuer, audience and JWKS URL
        assert auth.mode.value == plain["MEDSERVE_AUTH_MODE"]
        assert auth.roles_claim == plain["MEDSERVE_AUTH_ROLES_CLAIM"]
        assert auth.issuer == plain.get("MEDSERVE_AUTH_ISSUER")
        assert auth.trusted_origins == json.loads(plain.get("MEDSERVE_AUTH_TRUSTED_ORIGINS", "[]"))
        assert auth.allowed_hosts == json.loads(plain["MEDSERVE_ALLOWED_HOSTS"])
        assert deployment["metadata"]["name"] in auth.allowed_hosts


def test_production_imports_pinned_models_from_s3_with_irsa_and_a_secret_url() -> None:
    documents = render((PRODUCTION_VALUES,))
    (account,) = of_kind(documents, "ServiceAccount").values()
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role.endswith(":role/medserve-serving")
    assert not of_kind(documents, "Secret")  # the URL comes from an existing Secret
    for entry in SERVICES.values():
        deployment = of_kind(documents, "Deployment")[resource_name(entry.model)]
        env = env_of(deployment)
        for model in entry.models:  # companions are imported by the pod the same way
            tag = env[f"MEDSERVE_{model.upper()}_MODEL_TAG"]
            name, version = tag.split(":")
            assert name == model and version != "latest"
            uri = env[f"MEDSERVE_{model.upper()}_MODEL_URI"]
            # The layout model_store.export_model writes: <uri>/<name>/<version>.bentomodel
            assert uri == f"s3://medserve-models/{name}/{version}.bentomodel"
        assert env["MEDSERVE_DATABASE_URL"]["secretKeyRef"]["name"] == "medserve-prediction-log"
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "medserve"


def test_an_inline_database_url_becomes_a_secret_not_an_env_value() -> None:
    url = "postgresql+psycopg://u:p@db:5432/medserve"
    documents = render(set_values=[f"predictionLog.url={url}"])
    secret = of_kind(documents, "Secret")[f"{RELEASE}-medserve-prediction-log"]
    assert secret["stringData"]["url"] == url
    for deployment in of_kind(documents, "Deployment").values():
        reference = env_of(deployment)["MEDSERVE_DATABASE_URL"]["secretKeyRef"]
        assert reference == {"name": secret["metadata"]["name"], "key": "url"}
        assert url not in str(deployment)


PROMETHEUS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}


def ingress_rules(documents: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each service's NetworkPolicy ingress rules, after checking what every policy shares."""
    policies = of_kind(documents, "NetworkPolicy")
    deployments = of_kind(documents, "Deployment")
    assert set(policies) == set(deployments)
    rules = {}
    for name, policy in policies.items():
        spec = policy["spec"]
        assert spec["podSelector"] == deployments[name]["spec"]["selector"]
        assert spec["policyTypes"] == ["Ingress"]
        # A rule without `from` (or with an empty one) admits every pod in the cluster.
        assert all(rule.get("from") for rule in spec["ingress"]), spec["ingress"]
        assert all(peer for rule in spec["ingress"] for peer in rule["from"])
        rules[name] = spec["ingress"]
    return rules


def rule_ports(rule: dict[str, Any]) -> list[str]:
    return [p["port"] for p in rule["ports"]]


def test_network_policy_admits_only_service_ports_and_prometheus(
    documents: list[dict[str, Any]],
) -> None:
    for rules in ingress_rules(documents).values():
        *clients, scrapes = rules
        assert rule_ports(scrapes) == ["http"]
        assert scrapes["from"] == [PROMETHEUS_PEER]
        assert all(rule_ports(rule) == ["http", "grpc"] for rule in clients)


def test_network_policy_denies_by_default() -> None:
    """No client selectors: nothing but Prometheus (HTTP port, /metrics) reaches the pods."""
    for rules in ingress_rules(render()).values():
        assert rules == [
            {"ports": [{"port": "http", "protocol": "TCP"}], "from": [PROMETHEUS_PEER]}
        ]


def test_network_policy_admits_exactly_the_client_selectors(tmp_path: Path) -> None:
    clinic = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "clinic"}}}
    app = {"podSelector": {"matchLabels": {"app": "ward-app"}}}
    values = tmp_path / "clients.yaml"
    values.write_text(yaml.safe_dump({"networkPolicy": {"clientSelectors": [clinic, app]}}))
    for rules in ingress_rules(render((values,))).values():
        clients, scrapes = rules
        assert rule_ports(clients) == ["http", "grpc"]
        assert clients["from"] == [clinic, app]
        assert rule_ports(scrapes) == ["http"] and scrapes["from"] == [PROMETHEUS_PEER]
    production = yaml.safe_load(PRODUCTION_VALUES.read_text())["networkPolicy"]["clientSelectors"]
    for rules in ingress_rules(render((PRODUCTION_VALUES,))).values():
        assert rules[0]["from"] == production


def test_the_disabled_network_policy_renders_none() -> None:
    assert not of_kind(render(set_values=["networkPolicy.enabled=false"]), "NetworkPolicy")


# --------------------------------------------------------------------------- access control


def test_auth_values_become_the_env_the_auth_settings_read() -> None:
    test_values = yaml.safe_load(AUTH_VALUES.read_text())["auth"]
    for deployment in of_kind(render(), "Deployment").values():
        env = env_of(deployment)
        assert env["MEDSERVE_AUTH_MODE"] == "oidc"
        assert env["MEDSERVE_AUTH_ISSUER"] == test_values["issuer"]
        assert env["MEDSERVE_AUTH_AUDIENCE"] == test_values["audience"]
        assert env["MEDSERVE_AUTH_JWKS_URL"] == test_values["jwksUrl"]
        assert env["MEDSERVE_AUTH_ROLES_CLAIM"] == "realm_access.roles"
        # Unset values stay the settings' defaults; proxy headers only in mode proxy.
        assert "MEDSERVE_AUTH_ROLE_PREFIX" not in env
        assert "MEDSERVE_AUTH_TRUSTED_ORIGINS" not in env
        assert not {n for n in env if n.startswith("MEDSERVE_AUTH_PROXY_")}


def test_allowed_hosts_are_the_service_names_and_the_extra_hosts() -> None:
    documents = render(
        set_values=["auth.allowedHosts[0]=medserve.clinic.example.org"], namespace="clinic-ml"
    )
    for entry in SERVICES.values():
        name = resource_name(entry.model)
        deployment = of_kind(documents, "Deployment")[name]
        expected = [
            f"{service}{suffix}"
            for service in (name, f"{name}-grpc")
            for suffix in ("", ".clinic-ml", ".clinic-ml.svc", ".clinic-ml.svc.cluster.local")
        ]
        expected += ["medserve.clinic.example.org"]
        assert json.loads(env_of(deployment)["MEDSERVE_ALLOWED_HOSTS"]) == expected
        # Both Services of the model (ClusterIP and headless gRPC) are the ones named.
        assert {name, f"{name}-grpc"} <= set(of_kind(documents, "Service"))


def test_the_chart_creates_a_random_csrf_secret_every_pod_reads() -> None:
    documents = render()
    secret = of_kind(documents, "Secret")[f"{RELEASE}-medserve-csrf"]
    assert secret["type"] == "Opaque"
    value = base64.b64decode(secret["data"]["csrf-secret"]).decode()
    assert re.fullmatch(r"[A-Za-z0-9]{48}", value)
    assert AuthSettings(csrf_secret=value).csrf_secret == value  # long enough for the settings
    again = of_kind(render(), "Secret")[secret["metadata"]["name"]]["data"]["csrf-secret"]
    assert base64.b64decode(again).decode() != value  # random per `helm template`; an
    # installed release keeps its own (`lookup` of the live Secret: needs a cluster to test).
    template = (CHART / "templates" / "secret.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace $name' in template
    for deployment in of_kind(documents, "Deployment").values():
        reference = env_of(deployment)["MEDSERVE_AUTH_CSRF_SECRET"]["secretKeyRef"]
        assert reference == {"name": secret["metadata"]["name"], "key": "csrf-secret"}
        assert value not in str(deployment)


def test_an_existing_csrf_secret_is_referenced_not_created() -> None:
    sets = ["auth.csrfSecret.existingSecret=from-vault", "auth.csrfSecret.key=csrf"]
    documents = render(set_values=sets)
    assert not of_kind(documents, "Secret")
    for deployment in of_kind(documents, "Deployment").values():
        reference = env_of(deployment)["MEDSERVE_AUTH_CSRF_SECRET"]["secretKeyRef"]
        assert reference == {"name": "from-vault", "key": "csrf"}


def test_the_oauth2_proxy_example_trusts_headers_only_from_the_proxy() -> None:
    example = yaml.safe_load(OAUTH2_PROXY_VALUES.read_text())
    documents = render((PRODUCTION_VALUES, OAUTH2_PROXY_VALUES))
    proxy = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "oauth2-proxy"}}}
    for rules in ingress_rules(documents).values():
        clients, scrapes = rules
        assert clients["from"] == [proxy]  # not the production clients: lists replace lists
        assert scrapes["from"] == [PROMETHEUS_PEER]
    for deployment in of_kind(documents, "Deployment").values():
        env = env_of(deployment)
        assert env["MEDSERVE_AUTH_MODE"] == "proxy"
        assert env["MEDSERVE_AUTH_PROXY_USER_HEADER"] == "x-forwarded-user"
        assert env["MEDSERVE_AUTH_PROXY_GROUPS_HEADER"] == "x-forwarded-groups"
        assert env["MEDSERVE_AUTH_ROLE_PREFIX"] == "medserve-"
        host = example["auth"]["allowedHosts"][0]
        assert host in json.loads(env["MEDSERVE_ALLOWED_HOSTS"])
        assert json.loads(env["MEDSERVE_AUTH_TRUSTED_ORIGINS"]) == [f"https://{host}"]


# --------------------------------------------------------------------------- gRPC TLS


def test_grpc_tls_mounts_the_secret_and_sets_the_files() -> None:
    for verify in (False, True):
        sets = ["grpc.tls.secretName=medserve-grpc-tls", f"grpc.tls.verifyClients={verify}"]
        documents = render(set_values=sets)
        for deployment in of_kind(documents, "Deployment").values():
            pod = deployment["spec"]["template"]["spec"]
            assert restricted_violations(deployment["spec"]["template"]) == []
            (volume,) = (v for v in pod["volumes"] if v["name"] == "grpc-tls")
            keys = ["tls.crt", "tls.key", *(["ca.crt"] if verify else [])]
            assert volume["secret"]["secretName"] == "medserve-grpc-tls"
            assert [item["key"] for item in volume["secret"]["items"]] == keys
            assert volume["secret"]["defaultMode"] == 0o440
            (mount,) = (m for m in container(deployment)["volumeMounts"] if m["name"] == "grpc-tls")
            assert mount == {
                "name": "grpc-tls",
                "mountPath": "/etc/medserve/grpc-tls",
                "readOnly": True,
            }
            env = env_of(deployment)
            tls_env = {k: v for k, v in env.items() if k.startswith("MEDSERVE_GRPC_TLS_")}
            expected = {
                "MEDSERVE_GRPC_TLS_CERT_FILE": "/etc/medserve/grpc-tls/tls.crt",
                "MEDSERVE_GRPC_TLS_KEY_FILE": "/etc/medserve/grpc-tls/tls.key",
            }
            if verify:
                expected["MEDSERVE_GRPC_TLS_CLIENT_CA_FILE"] = "/etc/medserve/grpc-tls/ca.crt"
            assert tls_env == expected
            settings = Settings(
                **{k.removeprefix("MEDSERVE_").lower(): v for k, v in tls_env.items()}
            )
            assert (settings.grpc_tls_client_ca_file is not None) is verify
        for service in of_kind(documents, "Service").values():
            grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
            assert grpc_port["appProtocol"] == "https"  # HTTP/2 over TLS, not cleartext h2c
        for document in documents:
            if not document["apiVersion"].startswith(OPERATOR_GROUP):
                kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_without_grpc_tls_nothing_is_mounted_and_grpc_is_h2c() -> None:
    documents = render()
    for deployment in of_kind(documents, "Deployment").values():
        assert not [n for n in env_of(deployment) if n.startswith("MEDSERVE_GRPC_TLS_")]
        assert "grpc-tls" not in str(deployment["spec"]["template"]["spec"]["volumes"])
    for service in of_kind(documents, "Service").values():
        grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
        assert grpc_port["appProtocol"] == "kubernetes.io/h2c"


# --------------------------------------------------------------------------- NOTES.txt


def install_notes(*args: str) -> str:
    """The NOTES a `helm install` prints (a client-side dry run: no cluster)."""
    command = ["install", RELEASE, str(CHART), "--namespace", "medserve", "--dry-run=client"]
    result = helm(*command, *args)
    return result.stdout.split("NOTES:", 1)[1]


def test_notes_say_how_to_reach_the_services_and_that_nothing_may_yet() -> None:
    notes = install_notes(*values_args())
    for entry in SERVICES.values():
        name = resource_name(entry.model)
        assert f"http://{name}.medserve.svc:{entry.http_port}" in notes
        assert f"grpc {name}.medserve.svc:{entry.grpc_port}" in notes
    assert "NOTHING CAN CALL THESE SERVICES YET" in notes
    assert "networkPolicy.clientSelectors" in notes
    assert "auth.mode oidc" in notes and "https://idp.example.org/realms/clinic" in notes
    assert "gRPC transport: plaintext" in notes
    production = install_notes(*values_args((PRODUCTION_VALUES,)))
    assert "NOTHING CAN CALL" not in production and "(2 selector(s))" in production
    proxy = install_notes(*values_args((PRODUCTION_VALUES, OAUTH2_PROXY_VALUES)))
    assert "auth.mode proxy" in proxy and "forge" in proxy
    tls = install_notes(
        *values_args(), "--set", "grpc.tls.secretName=t", "--set", "grpc.tls.verifyClients=true"
    )
    assert "gRPC transport: mutual TLS" in tls
