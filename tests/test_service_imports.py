"""Each service's import footprint: every service shares this codebase (and TensorFlow is
installed for training), so workers must not pull in heavy frameworks they do not use."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medserve.catalogue import SERVICES

HEAVY = ("tensorflow", "keras", "torch", "sklearn", "scipy", "pandas", "ray")


@pytest.mark.parametrize("model", sorted(SERVICES))
def test_service_imports_no_heavy_framework(model: str) -> None:
    module = SERVICES[model].target.split(":")[0]
    code = (
        f"import json, sys; import {module}; "
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
