"""`medserve doctor` on this machine's real state: ports held open by the test, a PATH without
tesseract or without the optional tools, a MEDSERVE_HOME that cannot be created."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from medserve.catalogue import SERVICES
from tests.catalogue_ports import free_offset, listening_on

HEART, ECG = SERVICES["heart_risk"], SERVICES["ecg_anomaly"]
ACCESS = "access control (MEDSERVE_AUTH_*)"


def doctor(offset: int, **env: str) -> tuple[int, dict[str, list[str]]]:
    """Run `medserve doctor`; its exit code and the table's cells by check name."""
    result = subprocess.run(
        [sys.executable, "-m", "medserve.cli", "doctor"],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, COLUMNS="300", MEDSERVE_PORT_OFFSET=str(offset), **env),
    )  # fmt: skip
    rows = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) == 5 and cells[0] != "check":
            rows[cells[0]] = cells[1:]  # for, status, detail, how to fix
    assert rows, result.stdout + result.stderr
    return result.returncode, rows


def statuses(rows: dict[str, list[str]]) -> dict[str, str]:
    return {name: cells[1] for name, cells in rows.items()}


@pytest.fixture
def offset() -> int:
    return free_offset()


@pytest.fixture
def listening(offset: int) -> Iterator[list[int]]:
    """Heart's HTTP port and ECG's gRPC port, held open."""
    ports = [HEART.http_port + offset, ECG.grpc_port + offset]
    with listening_on(*ports):
        yield ports


def path_with(tmp_path: Path, *tools: str) -> str:
    """A PATH holding only `tools` (links to this machine's own)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in tools:
        found = shutil.which(tool)
        assert found, f"{tool} is needed on this machine (make system-deps)"
        (folder / tool).symlink_to(found)
    return str(folder)


def test_this_machine_has_everything_and_the_doctor_says_so(offset: int) -> None:
    code, rows = doctor(offset)
    assert code == 0, rows
    assert set(statuses(rows).values()) == {"ok"}, rows
    expected = {"Python", "uv", "MEDSERVE_HOME writable", "tesseract", "chromium", ACCESS}
    expected |= {f"ports of {name}" for name in SERVICES} | {"tesseract language 'por'"}
    assert set(rows) == expected


def test_a_port_held_open_fails_its_service_and_says_how_to_fix_it(
    offset: int, listening: list[int]
) -> None:
    http_port, grpc_port = listening
    code, rows = doctor(offset)
    assert code == 1
    assert statuses(rows)["ports of heart_risk"] == "missing"
    assert rows["ports of heart_risk"][2] == f"in use: {http_port} (HTTP)"
    assert rows["ports of ecg_anomaly"][2] == f"in use: {grpc_port} (gRPC)"
    assert "MEDSERVE_PORT_OFFSET" in rows["ports of heart_risk"][3]
    assert statuses(rows)["ports of ct_pattern"] == "ok"


def test_without_tesseract_the_anonymiser_checks_fail_with_the_packages_to_install(
    offset: int, tmp_path: Path
) -> None:
    code, rows = doctor(offset, PATH=path_with(tmp_path, "uv", "chromium"))
    assert code == 1
    assert statuses(rows)["tesseract"] == "missing"
    assert "apt-get install tesseract-ocr tesseract-ocr-por" in rows["tesseract"][3]
    assert statuses(rows)["tesseract language 'por'"] == "missing"
    assert "tesseract-ocr-por" in rows["tesseract language 'por'"][3]
    assert statuses(rows)["chromium"] == "ok"  # only tesseract is gone


def test_missing_optional_tools_are_reported_but_do_not_fail(offset: int, tmp_path: Path) -> None:
    code, rows = doctor(offset, PATH=path_with(tmp_path, "tesseract"))
    assert code == 0, rows
    assert statuses(rows)["chromium"] == "optional"
    assert statuses(rows)["uv"] == "optional"
    assert statuses(rows)["tesseract language 'por'"] == "ok"


def test_a_home_that_cannot_be_created_is_reported(offset: int, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, rows = doctor(offset, MEDSERVE_HOME=str(blocker / "home"))
    assert code == 1
    assert statuses(rows)["MEDSERVE_HOME writable"] == "missing"
    assert "Not a directory" in rows["MEDSERVE_HOME writable"][2]


def test_incomplete_access_settings_fail_naming_what_is_missing_never_a_value(
    offset: int,
) -> None:
    secret = "s3cr3t-" * 6
    code, rows = doctor(
        offset,
        MEDSERVE_AUTH_MODE="oidc",
        MEDSERVE_AUTH_AUDIENCE="a",
        MEDSERVE_AUTH_CSRF_SECRET=secret,
    )
    assert code == 1
    assert statuses(rows)[ACCESS] == "missing"
    assert "MEDSERVE_AUTH_ISSUER" in rows[ACCESS][2]
    assert secret not in " ".join(rows[ACCESS])


def test_access_control_off_is_reported_but_does_not_fail(offset: int) -> None:
    code, rows = doctor(offset, MEDSERVE_AUTH_MODE="off")
    assert statuses(rows)[ACCESS] == "optional" and "OFF" in rows[ACCESS][2]
    assert code == 0, rows  # a warning, not a failure (this machine passes every other check)
