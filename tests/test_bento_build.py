"""`bentoml build` of bentofile.yaml, offline, and the Dockerfile it generates: Python 3.11,
a non-root user, locked requirements without dev dependencies, every service's code inside."""

from __future__ import annotations

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


def test_bento_holds_every_service_and_the_files_it_reads(bento: Path) -> None:
    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    assert manifest["name"] == "medserve"
    tracked = subprocess.run(
        ["git", "ls-files", "bentos", "medserve"], capture_output=True, text=True, check=True,
        cwd=ROOT,
    ).stdout.split()  # fmt: skip
    needed = [path for path in tracked if path.endswith((".py", ".dcm"))]
    missing = [path for path in needed if not (bento / "src" / path).is_file()]
    assert not missing, missing
    for entry in SERVICES.values():
        module = entry.target.split(":")[0].replace(".", "/") + ".py"
        assert (bento / "src" / module).is_file(), module
