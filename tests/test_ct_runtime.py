"""How a CT worker spends its cores (unit tests of `plan_execution`)."""

from __future__ import annotations

import pytest

from medserve.ct.model import batch_cap
from medserve.ct.runtime import ExecutionPlan, plan_execution
from medserve.ct.settings import CtSettings
from medserve.settings import Settings


@pytest.mark.parametrize(
    ("settings", "workers", "plan"),
    [
        (CtSettings(), 1, ExecutionPlan(4, 1)),  # one 1-thread call per core
        (CtSettings(), 2, ExecutionPlan(2, 1)),  # the cores shared out among workers
        (CtSettings(), 8, ExecutionPlan(1, 1)),  # never below one
        (CtSettings(concurrent_batches=1), 1, ExecutionPlan(1, 4)),  # one call, all cores
        (CtSettings(concurrent_batches=2, intra_op_threads=3), 1, ExecutionPlan(2, 3)),
        (CtSettings(runtime="keras"), 1, ExecutionPlan(1, 4)),  # Keras: one call at a time
    ],
)
def test_execution_plan(settings: CtSettings, workers: int, plan: ExecutionPlan) -> None:
    assert plan_execution(settings, workers, cores=4) == plan


@pytest.mark.parametrize(("cpu_limit", "cores"), [(0, 4), (2, 2), (16, 4)])
def test_cores_are_the_affinity_capped_by_the_pod_cpu_limit(
    monkeypatch: pytest.MonkeyPatch, cpu_limit: int, cores: int
) -> None:
    """In a pod the affinity shows the node's cores; the chart passes the CPU limit."""
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    assert Settings(cpu_limit=cpu_limit).cores == cores


@pytest.mark.parametrize(
    ("settings", "image_size", "cap"),
    [
        (CtSettings(), 128, 4),  # small inputs: a few slices per call
        (CtSettings(), 256, 4),
        (CtSettings(), 512, 1),  # large ones: one slice per call
        (CtSettings(max_batch_size=8), 512, 8),  # as set
    ],
)
def test_batch_cap_by_input_size(settings: CtSettings, image_size: int, cap: int) -> None:
    assert batch_cap(settings, image_size) == cap
