"""Training as a real Ray job, model export to a real S3 endpoint, and a service that imports
its model from S3 at start-up (what a pod does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from medserve import model_store
from tests.conftest import HEART_TARGET, RayHead, service_env
from tests.heart_samples import VALID_PATIENT
from tests.servers import (
    S3Server,
    medserve_service,
    seaweedfs_s3,
)

BUCKET = "medserve-models"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs_s3(tmp_path_factory.mktemp("s3")) as server:
        server.client().create_bucket(Bucket=BUCKET)
        yield server


def s3_env(s3: S3Server) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "MEDSERVE_S3_ENDPOINT_URL": s3.endpoint_url,
    }


def test_ray_job_submit_trains_and_exports_to_s3(ray_head: RayHead, s3: S3Server) -> None:
    before = {m.tag for m in model_store.list_models("heart_risk")}
    runtime_env = {
        "env_vars": {
            "MEDSERVE_HOME": os.environ["MEDSERVE_HOME"],
            "BENTOML_HOME": os.environ["BENTOML_HOME"],
            **s3_env(s3),
        }
    }
    entrypoint = f"{sys.executable} -m ray_jobs.train heart_risk --export s3://{BUCKET}/models"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ray"), "job", "submit",
            f"--address={ray_head.dashboard_url}", f"--runtime-env-json={json.dumps(runtime_env)}",
            "--", *entrypoint.split(),
        ],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, RAY_AUTH_MODE="disabled"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trained = [line for line in result.stdout.splitlines() if '"event": "trained"' in line]
    assert trained, result.stdout[-3000:]
    outcome = json.loads(trained[-1][trained[-1].index("{") :])
    assert outcome["metrics"]["accuracy"] >= 0.82
    after = {m.tag for m in model_store.list_models("heart_risk")}
    assert outcome["tag"] in after - before
    name, version = outcome["tag"].split(":")
    assert outcome["exported_to"] == f"s3://{BUCKET}/models/{name}/{version}.bentomodel"
    head = s3.client().head_object(Bucket=BUCKET, Key=f"models/{name}/{version}.bentomodel")
    assert head["ContentLength"] > 1000


def test_export_and_import_through_a_local_folder(heart_tag: str, tmp_path: Path) -> None:
    target = model_store.export_model(heart_tag, str(tmp_path / "exported"))
    assert Path(target).is_file()
    assert model_store.import_model(target) == heart_tag  # already present: idempotent


def test_service_imports_its_model_from_s3_at_startup(
    heart_tag: str, s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in s3_env(s3).items():
        monkeypatch.setenv(key, value)
    from medserve.settings import Settings

    uri = model_store.export_model(heart_tag, f"s3://{BUCKET}/pods", Settings())
    empty_store = tmp_path / "fresh-bentoml-home"
    env = service_env(
        tmp_path,
        BENTOML_HOME=str(empty_store),
        MEDSERVE_HEART_RISK_MODEL_URI=uri,
        MEDSERVE_HEART_RISK_MODEL_TAG=heart_tag,
        **s3_env(s3),
    )
    with medserve_service(HEART_TARGET, tmp_path, env) as service:
        body = httpx.post(
            f"{service.url}/predict",
            json={"patients": [VALID_PATIENT]},
            headers=service.auth_headers,
        ).json()
    assert body["model_tag"] == heart_tag
    assert (empty_store / "models" / "heart_risk").is_dir()


def test_cli_lists_models(heart_tag: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "medserve.cli", "models", "heart_risk"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, COLUMNS="200"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert heart_tag in result.stdout
