"""The Helm chart rendered by the real helm binary (from tools/k8s_tools.py): lint, template, and
the rendered Services cross-checked against the service catalogue the code serves."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from medserve.catalogue import SERVICES
from tools.k8s_tools import fetch, tool_path

CHART = Path(__file__).resolve().parent.parent / "charts" / "medserve"
RELEASE = "rel"


@pytest.fixture(scope="module")
def helm() -> Path:
    fetch()  # a no-op once `make test`'s setup has fetched it
    return tool_path("helm")


def rendered(helm: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(helm), "template", RELEASE, str(CHART)], capture_output=True, text=True, check=True
    )
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_chart_lints_strictly(helm: Path) -> None:
    result = subprocess.run(
        [str(helm), "lint", "--strict", str(CHART)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_catalogue_service_has_its_http_grpc_and_headless_services(helm: Path) -> None:
    services = {d["metadata"]["name"]: d for d in rendered(helm) if d["kind"] == "Service"}
    for entry in SERVICES.values():
        name = f"{RELEASE}-{entry.model.replace('_', '-')}"
        ports = {p["name"]: p["port"] for p in services[name]["spec"]["ports"]}
        assert ports == {"http": entry.http_port, "grpc": entry.grpc_port}
        headless = services[f"{name}-grpc"]["spec"]
        assert headless["clusterIP"] == "None"
        assert [p["port"] for p in headless["ports"]] == [entry.grpc_port]
    assert len(services) == 2 * len(SERVICES)
