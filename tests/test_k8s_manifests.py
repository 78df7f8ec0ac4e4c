"""Kubernetes manifests validated strictly against the Kubernetes 1.37 schemas
(`kubernetes-validate`; an unknown field or a missing schema fails): the rendered chart, and each
KubeRay RayJob's pod templates as v1 PodTemplates (KubeRay publishes no schema package)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tools.k8s_tools import fetch, tool_path
from training.ct_pattern import CtTrainConfig

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = "1.37"
RAYJOBS = sorted((ROOT / "k8s").glob("rayjob-*.yaml"))


def pod_templates(rayjob: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"]["template"]] + [
        group["template"] for group in cluster["workerGroupSpecs"]
    ]


def test_rendered_chart_is_valid_kubernetes() -> None:
    fetch()
    out = subprocess.run(
        [str(tool_path("helm")), "template", "rel", str(ROOT / "charts" / "medserve")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    documents = [d for d in yaml.safe_load_all(out) if d]
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


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


@pytest.mark.parametrize("path", RAYJOBS, ids=lambda p: p.name)
def test_rayjob_pod_templates_are_valid_arm64_pod_templates(path: Path) -> None:
    rayjob = yaml.safe_load(path.read_text())
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    assert rayjob["spec"]["entrypoint"].split()[:2] == ["python", "-m"]
    for i, template in enumerate(pod_templates(rayjob)):
        assert template["spec"]["nodeSelector"]["kubernetes.io/arch"] == "arm64"
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"{path.stem}-{i}"},
            "template": template,
        }
        kubernetes_validate.validate(pod_template, KUBERNETES, strict=True)


def test_ct_training_rayjob_runs_the_tested_entrypoint_with_real_settings() -> None:
    rayjob = yaml.safe_load((ROOT / "k8s" / "rayjob-train-ct.yaml").read_text())
    entrypoint = rayjob["spec"]["entrypoint"].split()
    assert entrypoint[:4] == ["python", "-m", "ray_jobs.train", "ct_pattern"]
    env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])["env_vars"]
    prefix = "MEDSERVE_CT_TRAIN_"
    fields = {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}
    assert set(fields) <= set(CtTrainConfig.model_fields), set(fields) - set(
        CtTrainConfig.model_fields
    )
    config = CtTrainConfig(**fields)  # the values parse as the training job reads them
    assert config.image_size == 512 and config.epochs == 30  # the source's run
    mounts = {m["mountPath"] for t in pod_templates(rayjob) for c in t["spec"]["containers"]
              for m in c.get("volumeMounts", [])}  # fmt: skip
    assert any(str(config.data_dir).startswith(mount) for mount in mounts)
