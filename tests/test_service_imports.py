"""The heart service's import footprint: every service shares this codebase, so the heart
workers must not pull in heavy frameworks they do not use."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("tensorflow", "keras", "torch", "sklearn", "scipy", "pandas", "ray")


def test_heart_service_imports_no_heavy_framework() -> None:
    code = (
        "import json, sys; import bentos.heart_risk; "
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
