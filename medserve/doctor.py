"""`medserve doctor`: what each feature needs on this machine, and how to fix what is missing.

Each check is a small function returning a `Check`; `medserve up` runs the serving ones (state
folder, ports) before it starts anything, so a busy port fails in a second, not after training.
"""

from __future__ import annotations

import errno
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from importlib.metadata import metadata
from typing import Literal

from packaging.specifiers import SpecifierSet
from pydantic import BaseModel, ValidationError
from rich.table import Table

from medserve.auth.settings import AuthMode, AuthSettings
from medserve.auth.tokens import LocalSigner
from medserve.catalogue import SERVICES, ServiceEntry
from medserve.settings import Settings

Status = Literal["ok", "missing", "optional"]
DEBIAN_PACKAGES_HINT = "as root: `make system-deps` (or apt-get install {packages})"
TESSERACT_HINT = DEBIAN_PACKAGES_HINT.format(packages="tesseract-ocr tesseract-ocr-por")
CHROMIUM_HINT = DEBIAN_PACKAGES_HINT.format(packages="chromium")
UV_HINT = "python3 -m pip install uv (`make` does this itself)"
ANY_ADDRESS = ("0.0.0.0", "::", "")
LOOPBACK = "127.0.0.1"


class Check(BaseModel):
    """One thing a feature needs: whether this machine has it, and how to get it if not."""

    name: str
    feature: str
    ok: bool
    required: bool = True
    detail: str
    fix: str = ""

    @property
    def status(self) -> Status:
        if self.ok:
            return "ok"
        return "missing" if self.required else "optional"


def probe_host(bind_host: str) -> str:
    """Where a client on this machine reaches a server bound to `bind_host`."""
    return LOOPBACK if bind_host in ANY_ADDRESS else bind_host


def service_ports(entry: ServiceEntry, settings: Settings) -> tuple[int, int]:
    """A service's (HTTP, gRPC) ports: the catalogue's, shifted by `MEDSERVE_PORT_OFFSET`."""
    return entry.http_port + settings.port_offset, entry.grpc_port + settings.port_offset


def port_in_use(host: str, port: int) -> bool:
    """Whether a server could not listen on host:port now. SO_REUSEADDR as servers set it, so
    a port held only by closed connections (TIME_WAIT) counts as free, as it is for them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return True
            raise
        return False


def check_ports(entry: ServiceEntry, settings: Settings) -> Check:
    http_port, grpc_port = service_ports(entry, settings)
    busy = [
        f"{port} ({kind})"
        for kind, host, port in (
            ("HTTP", settings.http_host, http_port),
            ("gRPC", settings.grpc_host, grpc_port),
        )
        if port_in_use(host, port)
    ]
    ports = f"{http_port} (HTTP), {grpc_port} (gRPC)"
    return Check(
        name=f"ports of {entry.model}",
        feature="serving",
        ok=not busy,
        detail=f"in use: {', '.join(busy)}" if busy else f"free: {ports}",
        fix="stop what listens there (`ss -ltnp` names it: a `medserve up` already running?) "
        "or move every service's ports with MEDSERVE_PORT_OFFSET (e.g. 100)",
    )


def check_home(settings: Settings) -> Check:
    """MEDSERVE_HOME holds the model store, prediction log, caches and logs."""
    home = settings.home
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=home, prefix=".doctor-"):
            problem = None
    except OSError as error:
        problem = error.strerror or str(error)
    return Check(
        name="MEDSERVE_HOME writable",
        feature="serving, training",
        ok=problem is None,
        detail=f"{home}: {problem}" if problem else str(home),
        fix="set MEDSERVE_HOME to a writable folder, or fix that folder's permissions",
    )


def check_access() -> Check:
    """The access-control settings parse, and local mode's signing key can be made or read.

    Names the offending settings only: a value may be a secret."""
    name, feature = "access control (MEDSERVE_AUTH_*)", "serving"
    try:
        settings = AuthSettings()
        if settings.mode is AuthMode.LOCAL:
            LocalSigner(settings.key_file)
    except ValidationError as error:
        fields = ", ".join(".".join(map(str, e["loc"])) or e["msg"] for e in error.errors())
        return Check(
            name=name, feature=feature, ok=False, detail=f"invalid: {fields}",
            fix="see the README's Access control section",
        )  # fmt: skip
    except (OSError, ValueError) as error:
        return Check(
            name=name, feature=feature, ok=False, detail=f"signing key: {type(error).__name__}",
            fix="make MEDSERVE_HOME/auth writable, or remove a damaged local-signing-key.pem",
        )  # fmt: skip
    if settings.mode is AuthMode.OFF:
        return Check(
            name=name, feature=feature, ok=False, required=False,
            detail="OFF: anyone can read patient data", fix="unset MEDSERVE_AUTH_MODE",
        )  # fmt: skip
    return Check(name=name, feature=feature, ok=True, detail=f"{settings.mode.value} mode")


def check_python() -> Check:
    wanted = SpecifierSet(metadata("medserve")["Requires-Python"])
    running = ".".join(map(str, sys.version_info[:3]))
    return Check(
        name="Python",
        feature="everything",
        ok=running in wanted,
        detail=f"{running} (needs {wanted})",
        fix="run through `uv run medserve ...` (uv installs the locked Python)",
    )


def check_tool(tool: str, feature: str, fix: str, *, required: bool = True) -> Check:
    """A program on PATH."""
    found = shutil.which(tool)
    return Check(
        name=tool,
        feature=feature,
        ok=found is not None,
        required=required,
        detail=found or "not on PATH",
        fix=fix,
    )


def tesseract_languages() -> set[str]:
    """The languages `tesseract --list-langs` reports (how PyMuPDF finds its data too)."""
    tesseract = shutil.which("tesseract")
    if tesseract is None:
        return set()
    listed = subprocess.run(
        [tesseract, "--list-langs"], capture_output=True, text=True, timeout=30, check=False
    )
    # The first line names the folder ("List of available languages in ..."), then one a line.
    return {line.strip() for line in listed.stdout.splitlines()[1:] if line.strip()}


def check_tesseract_language(language: str) -> Check:
    languages = tesseract_languages()
    return Check(
        name=f"tesseract language '{language}'",
        feature="anonymiser (OCR check)",
        ok=language in languages,
        detail=f"installed: {', '.join(sorted(languages)) or 'none'}",
        fix=DEBIAN_PACKAGES_HINT.format(packages=f"tesseract-ocr-{language}")
        + "; or point TESSDATA_PREFIX at a folder holding its .traineddata",
    )


def serving_checks(settings: Settings, entries: Iterable[ServiceEntry]) -> list[Check]:
    """What `medserve up` needs before it starts anything."""
    return [
        check_home(settings),
        check_access(),
        *(check_ports(entry, settings) for entry in entries),
    ]


def run_checks(settings: Settings) -> list[Check]:
    """Every check, feature by feature."""
    from medserve.anonymize.settings import AnonymizerSettings

    return [
        check_python(),
        check_tool("uv", "make up, make test", UV_HINT, required=False),
        *serving_checks(settings, SERVICES.values()),
        check_tool("tesseract", "anonymiser (OCR check)", TESSERACT_HINT),
        check_tesseract_language(AnonymizerSettings().ocr_language),
        check_tool("chromium", "browser tests only", CHROMIUM_HINT, required=False),
    ]


def checks_table(checks: Iterable[Check]) -> Table:
    table = Table("check", "for", "status")
    for heading in ("detail", "how to fix"):  # paths and commands: folded, never cut short
        table.add_column(heading, overflow="fold")
    colours = {"ok": "green", "missing": "red", "optional": "yellow"}
    for check in checks:
        table.add_row(
            check.name,
            check.feature,
            f"[{colours[check.status]}]{check.status}[/]",
            check.detail,
            "" if check.ok else check.fix,
        )
    return table


def failed(checks: Iterable[Check]) -> list[Check]:
    """The required checks that did not pass."""
    return [check for check in checks if check.status == "missing"]
