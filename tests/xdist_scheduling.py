"""How `pytest -n N` (pytest-xdist) splits the suite between workers.

A work unit is a test file, as with `--dist loadfile`, so a file's module-scoped servers start
once. Files whose tests kill processes by what they run (the `ray::...MapBatches` workers of
*any* anonymisation job on the machine) are bound into one unit: they never run side by side.
Session fixtures run once per worker, except the trained models (`trained_once` in conftest.py).
The longest units are handed out first (longest-processing-time-first), so no worker is left
running a long file alone at the end while the other idles.
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
# Units in the order they are handed out first, longest first (measured: docs/status.md,
# issue 16); every other file follows in collection order.
LONGEST_FIRST = (
    "anonymise-with-ray",
    "tests/test_ct_training.py",
    "tests/test_launcher.py",
)
_UNIT_OF_FILE = {path: unit for unit, paths in BOUND.items() for path in paths}


class BoundFileScheduling(LoadScopeScheduling):
    """`--dist loadfile` with bound files and the longest units first."""

    def __init__(self, config: pytest.Config, log: Producer | None = None) -> None:
        super().__init__(config, log)

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        return _UNIT_OF_FILE.get(path, path)

    def _assign_work_unit(self, node: WorkerController) -> None:
        first = next((unit for unit in LONGEST_FIRST if unit in self.workqueue), None)
        if first is not None:
            self.workqueue.move_to_end(first, last=False)
        super()._assign_work_unit(node)
