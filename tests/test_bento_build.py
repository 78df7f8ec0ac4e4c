"""`bentoml build` of bentofile.yaml, offline, and the Dockerfile it generates: Python 3.11,
a non-root user, locked requirements without dev dependencies, every service's code inside."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from medserve.catalogue import SERVICES
from tests.import_graph import import_graph, module_name

ROOT = Path(__file__).resolve().parent.parent
LOCKED = ROOT / "requirements" / "bento.txt"
EXPORT = ["export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "--no-header"]


def requirement_names(text: str) -> set[str]:
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return {Requirement(line).name.lower().replace("_", "-") for line in lines if line}


@pytest.fixture(scope="module")
def bento(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("bentoml-build")
    env = dict(os.environ, BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="True")
    result = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", str(ROOT)],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (folder,) = (p for p in (home / "bentos" / "medserve").iterdir() if p.is_dir())
    return folder


def test_locked_requirements_are_current() -> None:
    uv = shutil.which("uv")
    assert uv, "uv is needed (make test installs it)"
    fresh = subprocess.run(
        [uv, *EXPORT, "--format", "requirements-txt"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    assert fresh == LOCKED.read_text(), "run the uv export in bentofile.yaml's header"


def test_dockerfile_is_python_311_and_runs_as_a_non_root_user(bento: Path) -> None:
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    froms = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert froms and all(image.startswith("python:3.11") for image in froms), froms
    users = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), users


def test_bento_requirements_are_the_locked_ones_without_dev_dependencies(bento: Path) -> None:
    installed = requirement_names((bento / "env" / "python" / "requirements.txt").read_text())
    assert installed == requirement_names(LOCKED.read_text())
    # The dev group's own tools (httpx, also a dev dependency, comes with bentoml at run time).
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]
    tools = {"pytest", "ruff", "moto", "playwright", "pydicom-data", "kubernetes-validate"}
    assert tools <= {Requirement(r).name.lower() for r in groups["dev"]}
    assert not tools & installed, tools & installed
    assert {"bentoml", "onnxruntime", "pydicom"} <= installed


# Run by name in the image: the chart's schema-migration Job (`python -m medserve.database`).
IMAGE_ENTRY_POINTS = ["medserve.database.__main__"]


def migration_scripts() -> set[str]:
    """Alembic's environment and revisions: loaded by path by the migration, never imported."""
    folder = ROOT / "medserve" / "database" / "migrations"
    return {module_name(path) for path in folder.rglob("*.py")}


def serving_modules() -> set[str]:
    """Every project module the services and the image's entry points import (statically, local
    imports included), with the packages that hold them, and the migration scripts."""
    graph = import_graph()
    needed: set[str] = set()
    pending = [entry.target.split(":")[0] for entry in SERVICES.values()] + IMAGE_ENTRY_POINTS
    while pending:
        module = pending.pop()
        if module not in needed:
            needed.add(module)
            pending.extend(graph[module])
    packages = {".".join(m.split(".")[:i]) for m in needed for i in range(1, m.count(".") + 1)}
    return needed | packages | migration_scripts()


def test_bento_holds_the_serving_code_and_nothing_else(bento: Path) -> None:
    src = bento / "src"
    shipped = {module_name(path, src) for path in src.rglob("*.py")}
    assert shipped == serving_modules(), (
        f"missing: {sorted(serving_modules() - shipped)}; "
        f"not needed: {sorted(shipped - serving_modules())}"
    )
    for training_only in ("training", "ray_jobs", "medserve.anonymize", "medserve.ct.synthetic"):
        assert not {m for m in shipped if m == training_only or m.startswith(training_only + ".")}
    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    assert manifest["name"] == "medserve"


@pytest.mark.parametrize("model", sorted(SERVICES))
def test_every_service_imports_from_the_bento_alone(bento: Path, model: str) -> None:
    """Run from the bento's own source tree: every project module must come from there (a file
    left out would be an ImportError in the image), and no heavy framework is imported."""
    module = SERVICES[model].target.split(":")[0]
    code = (
        f"import json, sys; import {module}; "
        "print(json.dumps({n: getattr(m, '__file__', '') or '' for n, m in sys.modules.items() "
        "if n.split('.')[0] in ('medserve', 'bentos')}))"
    )
    env = dict(os.environ, PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        cwd=bento / "src", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    outside = {n: f for n, f in loaded.items() if f and not f.startswith(str(bento / "src"))}
    assert not outside, outside
    heavy = subprocess.run(
        [sys.executable, "-c", f"import sys; import {module}; print('tensorflow' in sys.modules)"],
        capture_output=True, text=True, timeout=120, cwd=bento / "src", env=env,
    )  # fmt: skip
    assert heavy.stdout.strip().splitlines()[-1] == "False"
