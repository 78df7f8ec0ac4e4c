"""Kubernetes manifests validated strictly against the Kubernetes 1.37 schemas
(`kubernetes-validate`; an unknown field or a missing schema fails): the kustomize overlays of
k8s/ (rendered by the real kubectl), and each KubeRay RayJob/RayCluster, raw and rendered,
against our own schema of the KubeRay fields we use (k8s/schemas/; KubeRay publishes no schema
package) with its pod templates as v1 PodTemplates. Cross-checks against the code: entrypoints
and flags the Ray job modules accept, training settings the trainers read, the locked Ray
version, the Ray image's Dockerfile, the restricted Pod Security Standard. The chart's rendered
objects are validated in tests/test_chart.py."""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings
from referencing import Registry, Resource

from medserve.anonymize.settings import AnonymizerSettings, PipelineSettings
from medserve.respiratory.climate.settings import ClimateRulesSettings
from medserve.respiratory.settings import TriageSettings
from medserve.settings import Settings
from tests.chart_render import PRODUCTION_VALUES
from tests.k8s_render import BASE, K8S, OVERLAYS, RAY_KINDS, ROOT, load, ray_resources
from tests.k8s_render import overlay as overlay_documents
from tests.pod_security import restricted_violations
from training.ct_pattern import CtTrainConfig
from training.ecg_anomaly import EcgTrainConfig
from training.heart_risk import HeartTrainConfig
from training.registry import TRAINERS

SCHEMAS = K8S / "schemas"
KUBERNETES = "1.37"
RAYJOBS = sorted(BASE.glob("rayjob-*.yaml"))
RAY_FILES = sorted(BASE.glob("ray*.yaml"))
TRAIN_CONFIGS: dict[str, type[BaseSettings]] = {
    "heart_risk": HeartTrainConfig,
    "ecg_anomaly": EcgTrainConfig,
    "ct_pattern": CtTrainConfig,
    "respiratory_rules": ClimateRulesSettings,
    "respiratory_triage": TriageSettings,  # the KB publish reads the triage settings
}
# Which ServiceAccount (IRSA role) each Ray workload runs as.
SERVICE_ACCOUNTS = {
    "medserve-train-heart-risk": "medserve-train",
    "medserve-train-ecg-anomaly": "medserve-train",
    "medserve-train-ct-pattern": "medserve-train",
    "medserve-train-respiratory-triage": "medserve-train",
    "medserve-train-respiratory-rules": "medserve-train",
    "medserve-anonymize": "medserve-anonymize",
    "medserve-adhoc": "medserve-ray-adhoc",
}


# --------------------------------------------------------------------------- helpers


def every_ray_resource() -> Iterator[tuple[str, dict[str, Any]]]:
    """Each RayJob/RayCluster as written (k8s/base) and as every overlay renders it."""
    for path in RAY_FILES:
        yield f"base/{path.name}", load(path)
    for overlay in OVERLAYS:
        for resource in ray_resources(overlay_documents(overlay)):
            yield f"{overlay}/{resource['metadata']['name']}", resource


def cluster_spec(resource: dict[str, Any]) -> dict[str, Any]:
    return resource["spec"]["rayClusterSpec"] if resource["kind"] == "RayJob" else resource["spec"]


def pod_templates(resource: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every pod template of a RayJob (submitter, head, workers) or a RayCluster, by role."""
    cluster = cluster_spec(resource)
    templates = {"head": cluster["headGroupSpec"]["template"]}
    for group in cluster.get("workerGroupSpecs", []):
        templates[f"worker/{group['groupName']}"] = group["template"]
    if "submitterPodTemplate" in resource["spec"]:
        templates["submitter"] = resource["spec"]["submitterPodTemplate"]
    return templates


def ray_pods(resource: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in pod_templates(resource).items() if k != "submitter"}


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod["spec"]["containers"]


def env_names(container: dict[str, Any]) -> set[str]:
    return {e["name"] for e in container.get("env", [])}


def runtime_env(rayjob: dict[str, Any]) -> dict[str, str]:
    return yaml.safe_load(rayjob["spec"].get("runtimeEnvYAML", "{}") or "{}").get("env_vars", {})


def setting_names(settings: type[BaseSettings]) -> set[str]:
    prefix = settings.model_config["env_prefix"]
    return {f"{prefix}{name}".upper() for name in settings.model_fields}


@functools.cache
def schema_validators() -> dict[str, jsonschema.Draft202012Validator]:
    """Our KubeRay schemas by kind; the RayJob one refers into the RayCluster one."""
    schemas = {p.name: json.loads(p.read_text()) for p in SCHEMAS.glob("*.schema.json")}
    registry = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas.values()
    )
    validators = {}
    for kind, name in (("RayJob", "rayjob.schema.json"), ("RayCluster", "raycluster.schema.json")):
        jsonschema.Draft202012Validator.check_schema(schemas[name])
        validators[kind] = jsonschema.Draft202012Validator(schemas[name], registry=registry)
    return validators


def validate_ray_resource(resource: dict[str, Any]) -> None:
    """Our KubeRay schema, then every pod template strictly as a Kubernetes v1 PodTemplate."""
    schema_validators()[resource["kind"]].validate(resource)
    for role, template in pod_templates(resource).items():
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"{resource['metadata']['name']}-{role.replace('/', '-')}"},
            "template": template,
        }
        kubernetes_validate.validate(pod_template, KUBERNETES, strict=True)


@functools.cache
def entrypoint_flags(module: str) -> frozenset[str]:
    """The options `python -m <module> --help` really lists."""
    out = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=True,
        cwd=ROOT,
    ).stdout  # fmt: skip
    return frozenset(re.findall(r"(?<![\w-])--[a-z][a-z-]+", out))


# --------------------------------------------------------------------------- the validator


def test_validation_rejects_unknown_fields_and_kinds() -> None:
    """The validator is strict, or the tests above would prove nothing."""
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service | {"spec": {"portz": []}}, KUBERNETES, strict=True)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(
            {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "x"}},
            KUBERNETES,
            strict=True,
        )


# --------------------------------------------------------------------------- k8s/ overlays


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_renders_valid_objects_in_its_namespace(overlay: str) -> None:
    documents = overlay_documents(overlay)
    kinds = sorted(d["kind"] for d in documents)
    assert kinds.count("RayJob") == len(RAYJOBS) and kinds.count("RayCluster") == 1, kinds
    assert {"ServiceAccount", "ConfigMap"} <= set(kinds)
    for document in documents:
        assert document["metadata"]["namespace"] == OVERLAYS[overlay], document["metadata"]
        if document["kind"] in RAY_KINDS:
            validate_ray_resource(document)
        else:
            kubernetes_validate.validate(document, KUBERNETES, strict=True)


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_references_resolve(overlay: str) -> None:
    """Every ConfigMap, Secret and ServiceAccount a Ray pod names exists after kustomize (with
    its generated hash suffix), except the documented external ones."""
    documents = overlay_documents(overlay)
    present = {(d["kind"], d["metadata"]["name"]) for d in documents}
    # Created outside k8s/: by External Secrets as for the chart (values-production.yaml), and the
    # dev store's keys by hand (optional).
    production = yaml.safe_load(PRODUCTION_VALUES.read_text())
    external = {("Secret", production["predictionLog"]["existingSecret"])}
    external |= {("Secret", "medserve-s3-credentials")} if overlay == "dev" else set()
    for resource in ray_resources(documents):
        for role, pod in pod_templates(resource).items():
            wanted = set()
            if "serviceAccountName" in pod["spec"]:
                wanted.add(("ServiceAccount", pod["spec"]["serviceAccountName"]))
            for container in containers(pod):
                for source in container.get("envFrom", []):
                    if "configMapRef" in source:
                        wanted.add(("ConfigMap", source["configMapRef"]["name"]))
                    if "secretRef" in source:
                        wanted.add(("Secret", source["secretRef"]["name"]))
                for env in container.get("env", []):
                    if "secretKeyRef" in env.get("valueFrom", {}):
                        wanted.add(("Secret", env["valueFrom"]["secretKeyRef"]["name"]))
            missing = wanted - present - external
            assert not missing, (resource["metadata"]["name"], role, missing)


def test_dev_overlay_is_small_local_and_without_cloud_roles() -> None:
    documents = overlay_documents("dev")
    (config,) = (d for d in documents if d["kind"] == "ConfigMap")
    assert config["data"]["MEDSERVE_S3_ENDPOINT_URL"].startswith("http://")
    assert ".medserve-dev.svc" in config["data"]["MEDSERVE_S3_ENDPOINT_URL"]
    for account in (d for d in documents if d["kind"] == "ServiceAccount"):
        assert "eks.amazonaws.com/role-arn" not in account["metadata"].get("annotations", {})
    for resource in ray_resources(documents):
        for group in cluster_spec(resource)["workerGroupSpecs"]:
            assert group["maxReplicas"] <= 2 and int(group["rayStartParams"]["num-cpus"]) <= 2
        for pod in ray_pods(resource).values():
            limits = containers(pod)[0]["resources"]["limits"]
            assert float(limits["cpu"]) <= 2, (resource["metadata"]["name"], limits)
            volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
            assert all("persistentVolumeClaim" not in v for v in volumes.values())
    jobs = {r["metadata"]["name"]: r for r in ray_resources(documents)}
    ct_env = runtime_env(jobs["medserve-train-ct-pattern"])
    assert "MEDSERVE_CT_TRAIN_DATA_DIR" not in ct_env  # synthetic slices
    CtTrainConfig(**{k.removeprefix("MEDSERVE_CT_TRAIN_").lower(): v for k, v in ct_env.items()})
    for pod in ray_pods(jobs["medserve-anonymize"]).values():
        env = {e["name"]: e.get("value") for e in containers(pod)[0]["env"]}
        assert env["MEDSERVE_ANON_WORKERS"] == "2"


def test_prod_overlay_pins_images_and_keeps_full_sizes() -> None:
    documents = overlay_documents("prod")
    production = yaml.safe_load(PRODUCTION_VALUES.read_text())
    (config,) = (d for d in documents if d["kind"] == "ConfigMap")
    assert config["data"]["MEDSERVE_S3_REGION"] == production["modelStore"]["region"]
    assert "MEDSERVE_S3_ENDPOINT_URL" not in config["data"]  # AWS itself
    pinned = re.compile(r"^[^:@]+(:\d+\.\d+\.\d+-[0-9a-f]{7,40}|@sha256:[0-9a-f]{64})$")
    base = {load(p)["metadata"]["name"]: load(p) for p in RAY_FILES}
    for resource in ray_resources(documents):
        name = resource["metadata"]["name"]
        for role, pod in pod_templates(resource).items():
            for container in containers(pod):
                assert pinned.match(container["image"]), (name, role, container["image"])
                assert "latest" not in container["image"]
            if role.startswith("worker/"):
                assert pod["spec"]["nodeSelector"]["eks.amazonaws.com/nodegroup"]
        written = pod_templates(base[name])
        for role, pod in ray_pods(resource).items():
            want = containers(written[role])[0]["resources"]
            assert containers(pod)[0]["resources"] == want, (name, role)
    for account in (d for d in documents if d["kind"] == "ServiceAccount"):
        arn = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        assert re.fullmatch(r"arn:aws:iam::\d{12}:role/medserve-(train|anonymize)", arn), arn


# --------------------------------------------------------------------------- KubeRay resources


@pytest.mark.parametrize("source", [f"base/{p.name}" for p in RAY_FILES] + sorted(OVERLAYS))
def test_ray_resources_match_our_kuberay_schema_and_pod_templates(source: str) -> None:
    if source.startswith("base/"):
        resources = [load(BASE / source.removeprefix("base/"))]
    else:
        resources = ray_resources(overlay_documents(source))
    assert resources
    for resource in resources:
        validate_ray_resource(resource)
        cluster = cluster_spec(resource)
        for group in cluster["workerGroupSpecs"]:
            # KubeRay refuses replicas outside [minReplicas, maxReplicas].
            assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]


def test_our_kuberay_schema_rejects_typos_and_wrong_types() -> None:
    """The schema is strict, or validating against it would prove nothing."""
    rayjob = load(BASE / "rayjob-train-heart.yaml")
    raycluster = load(BASE / "raycluster-adhoc.yaml")
    validate_ray_resource(rayjob)  # the unmodified ones pass
    validate_ray_resource(raycluster)

    def broken(
        resource: dict[str, Any], path: str, value: Any = None, *, typo: str | None = None
    ) -> dict[str, Any]:
        """A copy with the field at `path` set to `value`, or renamed to `typo`."""
        changed = copy.deepcopy(resource)
        *parents, leaf = path.split(".")
        node = changed
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if typo is not None:
            node[typo] = node.pop(leaf)
        else:
            node[leaf] = value
        return changed

    head = "spec.rayClusterSpec.headGroupSpec"
    worker = "spec.rayClusterSpec.workerGroupSpecs.0"
    mistakes = [
        broken(rayjob, "spec.entrypoint", typo="entrypont"),
        broken(rayjob, "spec.shutdownAfterJobFinishes", "yes"),
        broken(rayjob, "spec.submissionMode", "K8sJob"),
        broken(rayjob, f"{head}.template", typo="templates"),
        broken(rayjob, f"{worker}.rayStartParams.num-cpus", 2),  # KubeRay wants strings
        broken(rayjob, f"{worker}.minReplicas", typo="minReplica"),
        broken(rayjob, "spec.rayClusterSpec.rayVersion", "latest"),
        broken(raycluster, "spec.enableInTreeAutoscaling", typo="enableInTreeAutoScaling"),
        broken(raycluster, "spec.autoscalerOptions.upscalingMode", "Fast"),
        broken(raycluster, "kind", "RayJob"),
    ]
    for mistake in mistakes:
        with pytest.raises(jsonschema.ValidationError):
            schema_validators()[mistake["kind"]].validate(mistake)
    # A pod template typo is caught by the Kubernetes schema instead.
    typo = broken(rayjob, f"{head}.template.spec.nodeSelector", typo="nodeSelectr")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_ray_resource(typo)


@pytest.mark.parametrize("source", ["base", *sorted(OVERLAYS)])
def test_ray_pods_are_restricted_arm64_and_sized(source: str) -> None:
    resources = (
        [load(p) for p in RAY_FILES]
        if source == "base"
        else ray_resources(overlay_documents(source))
    )
    assert {r["metadata"]["name"] for r in resources} == set(SERVICE_ACCOUNTS)
    assert restricted_violations({"spec": {"containers": [{}]}}, []), "the checker must bite"
    for resource in resources:
        name = resource["metadata"]["name"]
        extra = []
        if resource["kind"] == "RayCluster" and resource["spec"].get("enableInTreeAutoscaling"):
            extra = [resource["spec"]["autoscalerOptions"]["securityContext"]]
            mounts = {m["mountPath"] for m in resource["spec"]["autoscalerOptions"]["volumeMounts"]}
            assert "/tmp" in mounts  # a read-only root filesystem, and Ray writes /tmp/ray
        for role, pod in pod_templates(resource).items():
            spec = pod["spec"]
            assert spec["nodeSelector"]["kubernetes.io/arch"] == "arm64", (name, role)
            assert not restricted_violations(pod, extra if role == "head" else []), (name, role)
            volumes = {v["name"]: v for v in spec["volumes"]}
            for container in containers(pod):
                assert container["image"].split(":")[0].split("@")[0].endswith("medserve-ray")
                resources_ = container["resources"]
                assert {"cpu", "memory"} <= set(resources_["requests"]) and resources_["limits"]
                assert resources_["limits"]["memory"] == resources_["requests"]["memory"]
                mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
                assert "emptyDir" in volumes[mounts["/tmp"]], (name, role)  # Ray's /tmp/ray
                assert "emptyDir" in volumes[mounts["/home/ray"]], (name, role)
            if role == "submitter":
                # `ray job submit` needs neither AWS nor the Kubernetes API.
                assert "serviceAccountName" not in spec and not spec["automountServiceAccountToken"]
                assert spec["restartPolicy"] == "Never"
                continue
            assert spec["serviceAccountName"] == SERVICE_ACCOUNTS[name], (name, role)
            # Ray's object store lives in /dev/shm: memory-backed, bounded.
            shm = volumes[
                {m["mountPath"]: m["name"] for m in containers(pod)[0]["volumeMounts"]}["/dev/shm"]
            ]["emptyDir"]
            assert shm["medium"] == "Memory" and shm["sizeLimit"], (name, role)
            assert containers(pod)[0]["envFrom"][0]["configMapRef"]["name"].startswith(
                "medserve-ray-jobs"
            )


def test_ray_version_is_the_locked_one() -> None:
    locked = importlib.metadata.version("ray")
    for source, resource in every_ray_resource():
        assert cluster_spec(resource)["rayVersion"] == locked, source


def test_every_trainer_has_a_rayjob_running_the_tested_entrypoint() -> None:
    trained = {}
    for path in RAYJOBS:
        entrypoint = load(path)["spec"]["entrypoint"].split()
        if entrypoint[:3] == ["python", "-m", "ray_jobs.train"]:
            trained[entrypoint[3]] = path
    assert set(trained) == set(TRAINERS), set(TRAINERS) ^ set(trained)


@pytest.mark.parametrize("model", sorted(TRAIN_CONFIGS))
def test_training_rayjob_flags_settings_and_export_target(model: str) -> None:
    (rayjob,) = (load(p) for p in RAYJOBS if load(p)["spec"]["entrypoint"].split()[3:4] == [model])
    entrypoint = rayjob["spec"]["entrypoint"].split()
    assert entrypoint[:4] == ["python", "-m", "ray_jobs.train", model]
    flags = [a for a in entrypoint[4:] if a.startswith("--")]
    assert set(flags) <= entrypoint_flags("ray_jobs.train"), flags
    # The model lands where the chart's pods import from: <modelStore.uri>/<model>/<version>.
    export = entrypoint[entrypoint.index("--export") + 1]
    production = yaml.safe_load(PRODUCTION_VALUES.read_text())
    assert export == production["modelStore"]["uri"]
    # Job settings (runtimeEnvYAML) are fields of the model's training config and parse there.
    config_class = TRAIN_CONFIGS[model]
    prefix = config_class.model_config["env_prefix"]
    env = runtime_env(rayjob)
    assert env and all(k.startswith(prefix) for k in env), env
    assert set(env) <= setting_names(config_class), set(env) - setting_names(config_class)
    config_class(**{k.removeprefix(prefix).lower(): v for k, v in env.items()})
    # Container env and the shared ConfigMap carry platform settings only.
    known = setting_names(Settings)
    base_config = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    literals = [lit.split("=")[0] for lit in base_config["configMapGenerator"][0]["literals"]]
    assert set(literals) <= known
    for pod in ray_pods(rayjob).values():
        names = {n for c in containers(pod) for n in env_names(c)}
        assert names <= known, names - known
    if "--with-feedback" in flags:  # the training task (on a worker) reads the prediction log
        for role, pod in ray_pods(rayjob).items():
            if role.startswith("worker/"):
                assert "MEDSERVE_DATABASE_URL" in env_names(containers(pod)[0])


def test_kb_rayjob_mirrors_the_kb_into_a_migrated_database() -> None:
    """Publishing the triage KB writes its tables into the prediction log's database, which
    must be current (`check_schema`): the worker gets the chart's database URL; in dev, whose
    URL is a SQLite file of the worker, an init container migrates that file first."""
    (rayjob,) = (load(p) for p in RAYJOBS if "respiratory_triage" in load(p)["spec"]["entrypoint"])
    env = runtime_env(rayjob)
    kb = TriageSettings(**{k.removeprefix("MEDSERVE_TRIAGE_").lower(): v for k, v in env.items()})
    # The image's copy of the default KB (ray.Dockerfile: medserve/ under /opt/medserve).
    default = TriageSettings.model_fields["kb_path"].default.relative_to(ROOT)
    assert kb.kb_path.as_posix() == f"/opt/medserve/{default.as_posix()}"
    for overlay in ("base", *OVERLAYS):
        if overlay == "base":
            job = rayjob
        else:
            (job,) = (r for r in ray_resources(overlay_documents(overlay))
                      if r["metadata"]["name"] == rayjob["metadata"]["name"])  # fmt: skip
        (worker,) = (p for role, p in ray_pods(job).items() if role.startswith("worker/"))
        assert "MEDSERVE_DATABASE_URL" in env_names(containers(worker)[0]), overlay
        inits = {c["name"]: c for c in worker["spec"].get("initContainers", [])}
        if overlay == "dev":
            migrate = inits["migrate-database"]
            assert migrate["command"] == ["python", "-m", "medserve.database", "upgrade"]
            assert migrate["env"] == containers(worker)[0]["env"]  # the same database
            assert migrate["image"] == containers(worker)[0]["image"]
        else:
            assert not inits, overlay  # the chart's hook Job migrates the shared database


def test_ct_training_rayjob_runs_the_tested_entrypoint_with_real_settings() -> None:
    rayjob = load(BASE / "rayjob-train-ct.yaml")
    entrypoint = rayjob["spec"]["entrypoint"].split()
    assert entrypoint[:4] == ["python", "-m", "ray_jobs.train", "ct_pattern"]
    env = runtime_env(rayjob)
    prefix = "MEDSERVE_CT_TRAIN_"
    fields = {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}
    assert set(fields) <= set(CtTrainConfig.model_fields), set(fields) - set(
        CtTrainConfig.model_fields
    )
    config = CtTrainConfig(**fields)  # the values parse as the training job reads them
    assert config.image_size == 512 and config.epochs == 30  # the source's run
    mounts = {m["mountPath"] for t in ray_pods(rayjob).values() for c in t["spec"]["containers"]
              for m in c.get("volumeMounts", [])}  # fmt: skip
    assert any(str(config.data_dir).startswith(mount) for mount in mounts)


def test_anonymize_rayjob_flags_settings_and_pushgateway() -> None:
    rayjob = load(BASE / "rayjob-anonymize.yaml")
    entrypoint = rayjob["spec"]["entrypoint"].split()
    assert entrypoint[:3] == ["python", "-m", "ray_jobs.anonymize"]
    assert all(uri.startswith("s3://") for uri in entrypoint[3:5])
    flags = [a for a in entrypoint[5:] if a.startswith("--")]
    assert flags and set(flags) <= entrypoint_flags("ray_jobs.anonymize")
    known = setting_names(AnonymizerSettings) | setting_names(PipelineSettings)
    workers = cluster_spec(rayjob)["workerGroupSpecs"]
    for pod in ray_pods(rayjob).values():
        env = {e["name"]: e["value"] for e in containers(pod)[0]["env"]}
        assert set(env) <= known, set(env) - known
        assert env["MEDSERVE_ANON_PUSHGATEWAY_URL"] == (
            "http://prometheus-pushgateway.monitoring.svc:9091"
        )
        # One Ray Data task per worker CPU.
        cpus = sum(g["replicas"] * int(g["rayStartParams"]["num-cpus"]) for g in workers)
        assert int(env["MEDSERVE_ANON_WORKERS"]) == cpus
        PipelineSettings(
            workers=env["MEDSERVE_ANON_WORKERS"],
            pushgateway_url=env["MEDSERVE_ANON_PUSHGATEWAY_URL"],
        )


def test_ray_image_dockerfile_matches_the_pods() -> None:
    """k8s/images/ray.Dockerfile: Python 3.11 with the locked requirements, the code the jobs
    import, tesseract for the OCR check, and the non-root user the pods run as."""
    dockerfile = (K8S / "images" / "ray.Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines() if not line.startswith("#")]
    froms = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert froms and all(image.startswith("python:3.11") for image in froms), froms
    assert "COPY requirements/bento.txt" in dockerfile  # locked, no dev dependencies
    copied = {line.split()[1].rstrip("/") for line in lines if line.startswith("COPY ")}
    for package in ("medserve", "training", "ray_jobs", "data/heart"):
        assert package in copied and (ROOT / package).is_dir(), package
    # The context is the repository root: its ignore file sends exactly what is copied.
    ignore = (K8S / "images" / "ray.Dockerfile.dockerignore").read_text().splitlines()
    rules = [rule for rule in ignore if rule and not rule.startswith("#")]
    assert rules[0] == "*" and {r.removeprefix("!").rstrip("/") for r in rules[1:]} >= copied
    for package in ("tesseract-ocr-por", "wget"):
        assert re.search(rf"apt-get install[^\n]*{package}", dockerfile), package
    uid = int(re.search(r"ARG RAY_UID=(\d+)", dockerfile).group(1))
    assert uid != 0 and "USER ${RAY_UID}" in dockerfile
    for resource in (load(p) for p in RAY_FILES):
        for pod in pod_templates(resource).values():
            assert pod["spec"]["securityContext"]["runAsUser"] == uid
