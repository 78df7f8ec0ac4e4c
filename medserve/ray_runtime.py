"""How medserve drivers join Ray: a local Ray by default, the cluster in `RAY_ADDRESS` otherwise.

Importing this module turns off Ray's `uv run` hook, which would rebuild the whole environment for
every job from the working directory (tens of seconds) although the workers already run this
interpreter and its locked venv. Ray reads the flag when it is first imported, so every driver
imports this module before `ray`.
"""

from __future__ import annotations

import os

from medserve.settings import get_settings

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

FORWARDED_PREFIXES = ("MEDSERVE_", "AWS_")
# How Ray words a local node whose raylet did not register within its fixed 30 s.
RAYLET_START_TIMEOUT = "The current node timed out during startup"


def forwarded_environment() -> dict[str, str]:
    """The driver's `MEDSERVE_*` and `AWS_*` variables, for the job's workers.

    On a running cluster workers start from the node's environment, not the driver's; this is
    what `ray job submit --runtime-env-json` would pass. Under IRSA there are no static keys.
    """
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)}


# Set by Ray's job supervisor in the driver of a submitted job (`ray job submit`, KubeRay RayJob).
SUBMITTED_JOB_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def driver_runtime_env(forward_environment: bool) -> dict[str, dict[str, str]] | None:
    """The runtime env `connect` asks for. A submitted job's own runtime env already reaches
    its workers, and Ray refuses a driver env that sets the same variables again."""
    if not forward_environment or SUBMITTED_JOB_VAR in os.environ:
        return None
    return {"env_vars": forwarded_environment()}


def connect(*, log_to_driver: bool, forward_environment: bool) -> None:
    """Join (or start) Ray once per process."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    starts_here = address in (None, "", "local")  # "local": start one even beside a cluster
    attempts = get_settings().ray_local_start_attempts if starts_here else 1
    for attempt in range(1, attempts + 1):
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=log_to_driver,
                configure_logging=log_to_driver,
                runtime_env=driver_runtime_env(forward_environment),
            )
            return
        except Exception as error:  # Ray raises a bare Exception for this timeout
            if attempt == attempts or RAYLET_START_TIMEOUT not in str(error):
                raise
            ray.shutdown()  # the half-started local node, before a fresh one
