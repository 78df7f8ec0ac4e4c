"""Render k8s/ with the real kubectl (fetched by tools/k8s_tools.py): `kubectl kustomize` of an
overlay needs no cluster. Shared by the manifest, IAM and skaffold tests."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.chart_render import ROOT
from tools.k8s_tools import fetch, tool_path

K8S = ROOT / "k8s"
BASE = K8S / "base"
# Overlay -> the namespace it deploys into.
OVERLAYS = {"dev": "medserve-dev", "prod": "medserve"}
RAY_KINDS = ("RayJob", "RayCluster")


def load(path: Path) -> dict[str, Any]:
    """One YAML document from a file."""
    return yaml.safe_load(path.read_text())


@functools.cache
def kustomize(path: Path) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize <path>`: the rendered documents (cached; treat them as read-only)."""
    fetch()
    out = subprocess.run(
        [str(tool_path("kubectl")), "kustomize", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return tuple(d for d in yaml.safe_load_all(out) if d)


def overlay(name: str) -> tuple[dict[str, Any], ...]:
    """The rendered documents of k8s/overlays/<name>."""
    return kustomize(K8S / "overlays" / name)


def ray_resources(documents: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """The RayJobs and RayClusters among `documents`."""
    return [d for d in documents if d["kind"] in RAY_KINDS]
