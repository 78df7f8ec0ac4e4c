"""skaffold.yaml parsed and cross-checked: a skaffold v4beta config building linux/arm64 images,
every path it names present, each profile's kustomize overlay built by the real kubectl, its
chart release rendered by the real helm with the image values skaffold sets, and every image the
manifests use one that the profile builds (so skaffold substitutes what it built). No skaffold
binary is obtainable offline here (none on PyPI, npm or Debian), so `skaffold diagnose` /
`render --offline` cannot run; the serving image's build script runs for real up to docker
(`bentoml build` included), in its dry-run mode."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart_render import CHART, of_kind, render
from tests.k8s_render import OVERLAYS, ROOT, kustomize, ray_resources

SKAFFOLD = ROOT / "skaffold.yaml"
ARM64 = "linux/arm64"
PROFILE_OVERLAY = {"dev": "dev", "prod": "prod"}
# Profile fields replace the top-level ones wholesale (skaffold's profile semantics).
PIPELINE_KEYS = ("build", "test", "manifests", "deploy", "portForward", "resourceSelector")


def config() -> dict[str, Any]:
    return yaml.safe_load(SKAFFOLD.read_text())


def effective(profile: str | None) -> dict[str, Any]:
    """The pipeline skaffold runs with `-p profile` (None: no profile)."""
    document = config()
    pipeline = {key: document[key] for key in PIPELINE_KEYS if key in document}
    if profile is not None:
        (chosen,) = (p for p in document["profiles"] if p["name"] == profile)
        pipeline |= {key: chosen[key] for key in PIPELINE_KEYS if key in chosen}
    return pipeline


def template_name(image: str) -> str:
    """How skaffold names an artifact in its template variables (IMAGE_REPO_<name>, ...)."""
    return re.sub(r"[^A-Za-z0-9]", "_", image)


def repository(image: str) -> str:
    """An image reference without its tag or digest."""
    name = image.split("@")[0]
    head, _, tail = name.rpartition(":")
    return head if head and "/" not in tail else name


def chart_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def has_key(values: dict[str, Any], dotted: str) -> bool:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_config_is_a_skaffold_v4beta_config_building_for_arm64() -> None:
    document = config()
    version = re.fullmatch(r"skaffold/v4beta(\d+)", document["apiVersion"])
    assert version and int(version.group(1)) >= 11, document["apiVersion"]
    assert document["kind"] == "Config" and document["metadata"]["name"] == "medserve"
    assert {p["name"] for p in document["profiles"]} == set(PROFILE_OVERLAY)
    (dev,) = (p for p in document["profiles"] if p["name"] == "dev")
    assert {"command": "dev"} in dev["activation"]
    # Without a profile skaffold runs the dev pipeline (never its k8s/*.yaml default).
    assert effective(None) == effective("dev")
    for profile in PROFILE_OVERLAY:
        build = effective(profile)["build"]
        assert build["platforms"] == [ARM64], profile
        for artifact in build["artifacts"]:
            assert ARM64 in artifact.get("platforms", build["platforms"])


@pytest.mark.parametrize("profile", sorted(PROFILE_OVERLAY))
def test_every_referenced_path_exists(profile: str) -> None:
    pipeline = effective(profile)
    for artifact in pipeline["build"]["artifacts"]:
        context = ROOT / artifact.get("context", ".")
        assert context.is_dir(), artifact
        if "custom" in artifact:
            script = context / artifact["custom"]["buildCommand"].split()[0]
            assert script.is_file() and os.access(script, os.X_OK), script
            for path in artifact["custom"]["dependencies"]["paths"]:
                assert (context / path).exists(), path
        else:
            assert (context / artifact["docker"]["dockerfile"]).is_file(), artifact
    for path in pipeline["manifests"]["kustomize"]["paths"]:
        assert (ROOT / path / "kustomization.yaml").is_file(), path
    for release in pipeline["deploy"]["helm"]["releases"]:
        assert (ROOT / release["chartPath"] / "Chart.yaml").is_file(), release
        for path in release["valuesFiles"]:
            assert (ROOT / path).is_file(), path


@pytest.mark.parametrize("profile", sorted(PROFILE_OVERLAY))
def test_kustomize_paths_build_and_use_only_images_the_profile_builds(profile: str) -> None:
    pipeline = effective(profile)
    built = {artifact["image"] for artifact in pipeline["build"]["artifacts"]}
    allowed_kinds = {f["groupKind"] for f in pipeline["resourceSelector"]["allow"]}
    (path,) = pipeline["manifests"]["kustomize"]["paths"]
    assert path == f"k8s/overlays/{PROFILE_OVERLAY[profile]}"
    documents = kustomize(ROOT / path)
    resources = ray_resources(documents)
    assert resources
    for resource in resources:
        group = resource["apiVersion"].split("/")[0]
        # Skaffold only rewrites images (and adds its run labels) in kinds it is told about.
        assert f"{resource['kind']}.{group}" in allowed_kinds, resource["kind"]
    images = {
        container["image"]
        for resource in resources
        for spec in _pod_specs(resource)
        for container in spec["containers"]
    }
    assert images and {repository(i) for i in images} <= built, (images, built)


def _pod_specs(resource: dict[str, Any]) -> list[dict[str, Any]]:
    spec = resource["spec"]
    cluster = spec.get("rayClusterSpec", spec)
    templates = [cluster["headGroupSpec"]["template"]]
    templates += [g["template"] for g in cluster["workerGroupSpecs"]]
    templates += [spec["submitterPodTemplate"]] if "submitterPodTemplate" in spec else []
    return [t["spec"] for t in templates]


@pytest.mark.parametrize("profile", sorted(PROFILE_OVERLAY))
def test_chart_release_gets_the_built_serving_image(profile: str) -> None:
    """setValueTemplates keys exist in values.yaml, name an artifact of the profile, and really
    drive the rendered image (helm template with the values skaffold would pass)."""
    pipeline = effective(profile)
    (release,) = pipeline["deploy"]["helm"]["releases"]
    assert release["namespace"] == OVERLAYS[PROFILE_OVERLAY[profile]]  # beside its Ray jobs
    templates = release["setValueTemplates"]
    assert set(templates) == {"image.repository", "image.tag"}
    assert all(has_key(chart_values(), key) for key in templates)
    artifacts = {template_name(a["image"]): a["image"] for a in pipeline["build"]["artifacts"]}
    variables = set(re.findall(r"\{\{\s*\.IMAGE_(REPO|TAG|DIGEST)_(\w+)\s*\}\}", str(templates)))
    assert {name for _, name in variables} == {template_name(_serving_artifact(pipeline))}
    assert all(name in artifacts for _, name in variables)
    # Substitute what skaffold would (a pushed image: tag and digest) and render.
    image = _serving_artifact(pipeline)
    digest = "sha256:" + "0" * 64
    values = {"REPO": image, "TAG": "9eb5bb8", "DIGEST": digest}
    rendered = {
        key: re.sub(
            r"\{\{\s*\.IMAGE_(REPO|TAG|DIGEST)_\w+\s*\}\}", lambda m: values[m.group(1)], value
        )
        for key, value in templates.items()
    }
    documents = render(
        [ROOT / path for path in release["valuesFiles"]],
        [f"{key}={value}" for key, value in rendered.items()],
        namespace=release["namespace"],
    )
    deployments = of_kind(documents, "Deployment")
    assert deployments
    for deployment in deployments.values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert container["image"] == f"{image}:9eb5bb8@{digest}", container["image"]
    # The values files alone (helm without skaffold) name the same repository; overlays such as
    # values-dev.yaml may leave it to the base file.
    named = [
        yaml.safe_load((ROOT / path).read_text()).get("image", {}).get("repository")
        for path in release["valuesFiles"]
    ]
    assert image in named and set(named) <= {image, None}, named


def _serving_artifact(pipeline: dict[str, Any]) -> str:
    (artifact,) = (a for a in pipeline["build"]["artifacts"] if "custom" in a)
    return artifact["image"]


def run_build_script(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = ROOT / "k8s" / "images" / "build-bento.sh"
    return subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=300, env=env, cwd="/",
    )  # fmt: skip


def test_bento_build_script_builds_the_bento_and_an_arm64_image_command(
    tmp_path: Path,
) -> None:
    """What skaffold's custom builder runs, for real up to docker (none here): the bento is
    built offline and the buildx command targets its generated Dockerfile for linux/arm64."""
    env = dict(
        os.environ,
        IMAGE="registry.example/medserve:test",
        PUSH_IMAGE="true",
        PLATFORMS=f"{ARM64},linux/amd64",
        BUILD_CONTEXT=str(ROOT),
        BENTOML=f"{sys.executable} -m bentoml",
        BENTOML_HOME=str(tmp_path / "bentoml"),
        BENTOML_DO_NOT_TRACK="True",
        MEDSERVE_BUILD_DRY_RUN="1",
    )
    result = run_build_script(env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    command = shlex.split(result.stdout.strip().splitlines()[-1])
    assert command[:3] == ["docker", "buildx", "build"]
    options = {command[i]: command[i + 1] for i in range(3, len(command) - 1)}
    assert options["--platform"] == f"{ARM64},linux/amd64"
    assert options["--tag"] == env["IMAGE"] and "--push" in command and "--load" not in command
    context = Path(command[-1])
    assert context.is_relative_to(tmp_path / "bentoml" / "bentos" / "medserve")
    dockerfile = Path(options["--file"])
    assert dockerfile == context / "env" / "docker" / "Dockerfile"
    assert "FROM python:3.11" in dockerfile.read_text()
    # Loading a multi-platform image locally cannot work: refused before anything is built.
    refused = run_build_script(env | {"PUSH_IMAGE": "false", "BENTOML": "false"})
    assert refused.returncode == 1 and "can only be pushed" in refused.stderr
    missing = run_build_script({k: v for k, v in env.items() if k != "IMAGE"})
    assert missing.returncode != 0 and "IMAGE" in missing.stderr
