"""The chart's schema migration: a pre-install/pre-upgrade hook Job on a shared database (same
image, same Secret, restricted pods, strictly valid), an init container per pod on the pod's own
SQLite file otherwise; and the Job's command run for real."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from medserve.prediction_log import PredictionLog
from tests.chart_render import (
    CHART,
    PRODUCTION_VALUES,
    RELEASE,
    ROOT,
    helm,
    of_kind,
    render,
    values_args,
)
from tests.pod_security import restricted_violations

KUBERNETES = "1.37"
URL = "postgresql+psycopg://u:p@db:5432/medserve"
JOB = f"{RELEASE}-medserve-db-upgrade"
HOOK = "pre-install,pre-upgrade"


def main_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("values", ["inline-url", "production"])
def test_a_shared_database_is_migrated_by_a_hook_job_before_the_pods(values: str) -> None:
    documents = (
        render(set_values=[f"predictionLog.url={URL}"])
        if values == "inline-url"
        else render((PRODUCTION_VALUES,))
    )
    job = of_kind(documents, "Job")[JOB]
    kubernetes_validate.validate(job, KUBERNETES, strict=True)
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == HOOK
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    template = job["spec"]["template"]
    pod = template["spec"]
    assert restricted_violations(template) == []
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod  # hooks run before the chart's ServiceAccount exists
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "medserve.database", "upgrade"]
    job_db = env_of(container)["MEDSERVE_DATABASE_URL"]
    for deployment in of_kind(documents, "Deployment").values():
        served = main_container(deployment)
        assert container["image"] == served["image"]
        assert container["workingDir"] == served["workingDir"]
        assert job_db == env_of(served)["MEDSERVE_DATABASE_URL"]  # same Secret, same key
        inits = deployment["spec"]["template"]["spec"].get("initContainers", [])
        assert "migrate-database" not in {c["name"] for c in inits}
    secrets = of_kind(documents, "Secret")
    if values == "inline-url":  # the hook needs the Secret first: a hook of lower weight
        secret = secrets[job_db["secretKeyRef"]["name"]]
        kubernetes_validate.validate(secret, KUBERNETES, strict=True)
        hook = secret["metadata"]["annotations"]
        assert hook["helm.sh/hook"] == HOOK
        assert int(hook["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])
    else:
        assert job_db["secretKeyRef"]["name"] == "medserve-prediction-log"
        assert job_db["secretKeyRef"]["name"] not in secrets  # an existing Secret


def test_without_a_shared_database_each_pod_migrates_its_own_sqlite_file() -> None:
    documents = render()
    assert not of_kind(documents, "Job")
    for deployment in of_kind(documents, "Deployment").values():
        template = deployment["spec"]["template"]
        inits = {c["name"]: c for c in template["spec"]["initContainers"]}
        migrate = inits["migrate-database"]
        assert restricted_violations(template) == []
        assert migrate["command"] == ["python", "-m", "medserve.database", "upgrade"]
        served = main_container(deployment)
        home = env_of(served)["MEDSERVE_HOME"]
        assert env_of(migrate)["MEDSERVE_HOME"] == home
        assert "MEDSERVE_DATABASE_URL" not in env_of(served)
        state = {m["mountPath"]: m["name"] for m in served["volumeMounts"]}[home]
        assert {"name": state, "mountPath": home} in migrate["volumeMounts"]


def test_the_schema_refuses_bad_migration_values() -> None:
    for setting in ("predictionLog.migration.backoffLimit=-1", "predictionLog.migration.x=1"):
        args = ("template", RELEASE, str(CHART), *values_args(), "--set", setting)
        result = helm(*args, check=False)
        assert result.returncode != 0 and "/predictionLog/migration" in result.stderr


def test_the_jobs_command_migrates_the_database_it_is_given(tmp_path: Path) -> None:
    """The hook's container command and env, run here on a SQLite URL the Secret would hold."""
    job = of_kind(render(set_values=[f"predictionLog.url={URL}"]), "Job")[JOB]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {k: v for k, v in env_of(container).items() if isinstance(v, str)}
    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    env |= {"MEDSERVE_DATABASE_URL": url, "MEDSERVE_HOME": str(tmp_path), "HOME": str(tmp_path)}
    result = subprocess.run(
        container["command"], capture_output=True, text=True, cwd=ROOT, env=os.environ | env
    )
    assert result.returncode == 0, result.stderr
    assert "schema upgraded from nothing to" in result.stdout
    PredictionLog(url)  # a service would start on it
