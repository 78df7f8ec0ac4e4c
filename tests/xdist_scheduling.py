"""How `pytest -n N` (pytest-xdist) splits the suite between workers.

A work unit is a test file, as with `--dist loadfile`, so a file's module-scoped servers start
once. Files whose tests kill processes by what they run (the `ray::...MapBatches` workers of
*any* anonymisation job on the machine) are bound into one unit: they never run side by side.
Session fixtures run once per worker, except the trained models (`trained_once` in conftest.py).

Order: the CT training first and the other long units next (longest-processing-time-first, so
no worker is left running a long file alone at the end); the files that need the trained CT
model last, so that no worker sits waiting for the model while other files are left to run.
Everything else follows collection order. The lists are an optimisation only: a file missing
from them still runs correctly, just perhaps later or with a wait.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xdist.scheduler import LoadScopeScheduling

if TYPE_CHECKING:
    import pytest
    from xdist.remote import Producer
    from xdist.workermanage import WorkerController

# Files that must share a worker (run one after the other), by unit name.
BOUND = {
    "anonymise-with-ray": ("tests/test_anonymize_pipeline.py", "tests/test_anonymize_metrics.py"),
}
# Handed out before all others, in this order (measured: docs/status.md, issue 16).
FIRST = ("tests/test_ct_training.py", "anonymise-with-ray", "tests/test_launcher.py")
# Handed out after all others: they wait for the model test_ct_training.py's worker trains.
LAST = (
    "tests/test_ct_service.py",
    "tests/test_chart_pods.py",
    "tests/test_dashboards.py",
    "tests/test_oip_v2.py",
    "tests/test_fuzz.py",
)
_UNIT_OF_FILE = {path: unit for unit, paths in BOUND.items() for path in paths}


class BoundFileScheduling(LoadScopeScheduling):
    """`--dist loadfile` with bound files, the longest units first and the CT model's users
    last."""

    def __init__(self, config: pytest.Config, log: Producer | None = None) -> None:
        super().__init__(config, log)

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        return _UNIT_OF_FILE.get(path, path)

    def _assign_work_unit(self, node: WorkerController) -> None:
        queue = self.workqueue
        ahead = [unit for unit in FIRST if unit in queue]
        if ahead:
            queue.move_to_end(ahead[0], last=False)
        elif queue and next(iter(queue)) in LAST:
            later = [unit for unit in queue if unit not in LAST]
            if later:
                queue.move_to_end(later[0], last=False)
        super()._assign_work_unit(node)
