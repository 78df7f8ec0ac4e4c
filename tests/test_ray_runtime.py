"""How drivers join Ray: the runtime env they ask for (unit tests; the integration tests run
both paths against a real Ray head: `ray job submit` and a driver with RAY_ADDRESS)."""

from __future__ import annotations

import pytest

from medserve.ray_runtime import SUBMITTED_JOB_VAR, driver_runtime_env


def test_a_plain_driver_forwards_medserve_and_aws_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SUBMITTED_JOB_VAR, raising=False)
    monkeypatch.setenv("MEDSERVE_CT_TRAIN_IMAGE_SIZE", "64")
    monkeypatch.setenv("UNRELATED_SECRET", "x")
    env = driver_runtime_env(forward_environment=True)
    assert env is not None and env["env_vars"]["MEDSERVE_CT_TRAIN_IMAGE_SIZE"] == "64"
    assert "UNRELATED_SECRET" not in env["env_vars"]
    assert driver_runtime_env(forward_environment=False) is None


def test_a_submitted_job_keeps_its_own_runtime_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SUBMITTED_JOB_VAR, '{"runtime_env": {"env_vars": {"MEDSERVE_HOME": "/x"}}}')
    monkeypatch.setenv("MEDSERVE_HOME", "/x")
    assert driver_runtime_env(forward_environment=True) is None
