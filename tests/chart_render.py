"""Render the Helm chart with the real helm binary (fetched by tools/k8s_tools.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tools.k8s_tools import fetch, tool_path

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "medserve"
PRODUCTION_VALUES = CHART / "values-production.yaml"
OAUTH2_PROXY_VALUES = CHART / "examples" / "values-oauth2-proxy.yaml"
# The chart has no default identity provider and refuses to render without one (by design).
AUTH_VALUES = ROOT / "tests" / "chart_values" / "auth-oidc.yaml"
RELEASE = "rel"


def helm_binary() -> Path:
    """The pinned helm binary (a no-op fetch once `make test`'s setup has run)."""
    fetch()
    return tool_path("helm")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm with `args`; raises on failure when `check`."""
    return subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, check=check)


def values_args(values_files: Sequence[Path] = ()) -> list[str]:
    """`-f` arguments of `values_files`, layered over the test access-control values
    (`AUTH_VALUES`) unless one of the files configures `auth` itself: those (the production
    values, the examples, values.yaml alone) must stand on their own."""
    files = list(values_files)
    if not any("auth" in (yaml.safe_load(Path(path).read_text()) or {}) for path in files):
        files.insert(0, AUTH_VALUES)
    return [arg for path in files for arg in ("-f", str(path))]


def render(
    values_files: Sequence[Path] = (), set_values: Sequence[str] = (), namespace: str = "medserve"
) -> list[dict[str, Any]]:
    """`helm template` of the chart: the rendered documents, empty ones dropped
    (`values_args` says which values files are used)."""
    args = ["template", RELEASE, str(CHART), "--namespace", namespace]
    args += values_args(values_files)
    for value in set_values:
        args += ["--set", value]
    return [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc]


def resource_name(model: str) -> str:
    """Name of a service's chart objects (`medserve.serviceName`): heart_risk -> rel-heart-risk."""
    return f"{RELEASE}-{model.replace('_', '-')}"


def of_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """Rendered documents of one kind, by name."""
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}
