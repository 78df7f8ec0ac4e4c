"""How drivers join Ray: the runtime env they ask for (unit tests; the integration tests run
both paths against a real Ray head: `ray job submit` and a driver with RAY_ADDRESS)."""

from __future__ import annotations

import sys

import pytest

from medserve.ray_runtime import (
    RAYLET_START_TIMEOUT,
    SUBMITTED_JOB_VAR,
    connect,
    driver_runtime_env,
)
from medserve.settings import get_settings


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


class _FlakyRay:
    """`ray.init` that times out like an overloaded node `failures` times, then starts."""

    def __init__(self, failures: int, message: str = RAYLET_START_TIMEOUT) -> None:
        self.failures, self.message = failures, message
        self.inits = self.shutdowns = 0

    def init(self, **_: object) -> None:
        self.inits += 1
        if self.inits <= self.failures:
            raise Exception(f"{self.message}. This could happen because ...")

    def shutdown(self) -> None:
        self.shutdowns += 1

    def is_initialized(self) -> bool:
        return False


@pytest.mark.parametrize(
    ("address", "failures", "message", "inits", "raises"),
    [
        (None, 2, RAYLET_START_TIMEOUT, 3, False),  # a busy node: the third try starts
        ("local", 2, RAYLET_START_TIMEOUT, 3, False),  # what `medserve up`'s training asks
        (None, 3, RAYLET_START_TIMEOUT, 3, True),  # still busy: the error, after 3 tries
        (None, 1, "some other failure", 1, True),  # anything else is not retried
        ("10.0.0.1:6379", 1, RAYLET_START_TIMEOUT, 1, True),  # a cluster is never retried
    ],
)
def test_a_local_ray_that_misses_its_start_timeout_is_started_again(
    monkeypatch: pytest.MonkeyPatch,
    address: str | None,
    failures: int,
    message: str,
    inits: int,
    raises: bool,
) -> None:
    fake = _FlakyRay(failures, message)
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setenv("MEDSERVE_RAY_LOCAL_START_ATTEMPTS", "3")
    get_settings.cache_clear()
    if address is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", address)
    try:
        if raises:
            with pytest.raises(Exception, match=message):
                connect(log_to_driver=False, forward_environment=False)
        else:
            connect(log_to_driver=False, forward_environment=False)
    finally:
        get_settings.cache_clear()
    assert fake.inits == inits
    assert fake.shutdowns == min(failures, inits - 1 if raises else inits)
