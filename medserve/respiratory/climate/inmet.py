"""Loader of INMET BDMEP exports: monthly mean temperatures of one station.

Layout assumed (BDMEP "Dados da estação", periodicity monthly, CSV):

    Nome: SAO PAULO - MIRANTE                         <- station metadata block, `key: value`
    Codigo Estacao: 83781
    Latitude: -23.49638888
    ...
    Periodicidade da Medicao: Mensal
                                                      <- blank line
    Data Medicao;PRECIPITACAO TOTAL, MENSAL(mm);TEMPERATURA MEDIA COMPENSADA, MENSAL(°C);
    2015-01-31;218,4;24,3;
    2015-02-28;null;23,9;

- `;`-separated with a trailing `;`; latin-1 or UTF-8; the header line starts `Data Medicao`.
- The temperature is the first column named `TEMPERATURA MEDIA...` (accents ignored), the
  compensated mean preferred (conventional stations) over the automatic stations' plain mean.
- Dates `YYYY-MM-DD` (the month's last day) or `DD/MM/YYYY`; decimals with `,` (older exports)
  or `.` (newer ones); `null` or empty is a missing month, left out.
- A daily or hourly export (`Periodicidade da Medicao: Diaria`) is refused: averaging it here
  would hide missing days.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from medserve.respiratory.climate.records import ClimateDataError, MonthlyTemperature

_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_BR = re.compile(r"^(\d{2})/(\d{2})/(\d{4})$")
_NUMBER = re.compile(r"^-?\d+([.,]\d+)?$")
DATE_COLUMN = "DATA MEDICAO"
TEMPERATURE_PREFIX = "TEMPERATURA MEDIA"


def _plain(text: str) -> str:
    """Upper case without accents: `Medição` and `MEDICAO` name the same column."""
    folded = unicodedata.normalize("NFKD", text)
    return "".join(c for c in folded if not unicodedata.combining(c)).strip().upper()


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _month(cell: str, source: str, line: int) -> str:
    text = cell.strip()
    if match := _ISO.match(text):
        year, month = match.group(1), match.group(2)
    elif match := _BR.match(text):
        year, month = match.group(3), match.group(2)
    else:
        raise ClimateDataError(source, line, f"date {text[:20]!r} is not YYYY-MM-DD or DD/MM/YYYY")
    return f"{year}-{month}"


def _temperature_column(header: list[str], source: str, line: int) -> int:
    names = [_plain(c) for c in header]
    candidates = [i for i, name in enumerate(names) if name.startswith(TEMPERATURE_PREFIX)]
    if not candidates:
        raise ClimateDataError(source, line, "no 'TEMPERATURA MEDIA ...' column in the header")
    compensated = [i for i in candidates if "COMPENSADA" in names[i]]
    return (compensated or candidates)[0]


def _check_metadata(lines: list[str], source: str) -> None:
    for number, text in enumerate(lines, start=1):
        key, _, value = text.partition(":")
        if _plain(key) == "PERIODICIDADE DA MEDICAO" and _plain(value) != "MENSAL":
            raise ClimateDataError(
                source, number, f"periodicity {value.strip()!r}: a monthly export is needed"
            )


def _celsius(cell: str, source: str, line: int) -> float | None:
    text = cell.strip()
    if text.lower() in ("null", ""):
        return None
    if not _NUMBER.match(text):
        raise ClimateDataError(source, line, f"temperature {text[:20]!r} is not a number")
    return float(text.replace(",", "."))


def parse_inmet(text: str, source: str = "inmet.csv") -> list[MonthlyTemperature]:
    """Every month's mean temperature of a BDMEP monthly export; raises `ClimateDataError`."""
    lines = text.splitlines()
    start = next((i for i, t in enumerate(lines) if _plain(t).startswith(DATE_COLUMN)), None)
    if start is None:
        raise ClimateDataError(source, None, "no 'Data Medicao;...' header line found")
    _check_metadata(lines[:start], source)
    header = lines[start].split(";")
    column = _temperature_column(header, source, start + 1)
    found: dict[str, MonthlyTemperature] = {}
    for number, line in enumerate(lines[start + 1 :], start=start + 2):
        if not line.strip():
            continue
        cells = line.split(";")
        if len(cells) <= column:
            raise ClimateDataError(
                source, number, f"{len(cells)} fields, the temperature is field {column + 1}"
            )
        month = _month(cells[0], source, number)
        celsius = _celsius(cells[column], source, number)
        if celsius is None:
            continue
        if month in found:
            raise ClimateDataError(source, number, f"month {month} appears twice")
        try:
            found[month] = MonthlyTemperature(month=month, celsius=celsius)
        except ValidationError as exc:
            raise ClimateDataError(source, number, exc.errors()[0]["msg"]) from None
    if not found:
        raise ClimateDataError(source, start + 1, "no month has a mean temperature")
    return sorted(found.values(), key=lambda t: t.month)


def load_inmet(path: Path) -> list[MonthlyTemperature]:
    return parse_inmet(_decode(path.read_bytes()), path.name)


def _last_day(month: str) -> str:
    year, number = (int(part) for part in month.split("-"))
    days = [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28, 31, 30, 31, 30,
            31, 31, 30, 31, 30, 31]  # fmt: skip
    return f"{month}-{days[number - 1]:02d}"


def write_inmet(temperatures: Iterable[MonthlyTemperature], path: Path) -> None:
    """Write temperatures as a BDMEP monthly export of São Paulo - Mirante de Santana (83781),
    decimal commas, latin-1, so the real-file path runs end to end on synthetic data."""
    rows = sorted(temperatures, key=lambda t: t.month)
    lines = [
        "Nome: SAO PAULO - MIRANTE",
        "Codigo Estacao: 83781",
        "Latitude: -23.49638888",
        "Longitude: -46.61999999",
        "Altitude: 785.16",
        "Situacao: Operante",
        f"Data Inicial: {rows[0].month}-01",
        f"Data Final: {_last_day(rows[-1].month)}",
        "Periodicidade da Medicao: Mensal",
        "",
        "Data Medicao;PRECIPITACAO TOTAL, MENSAL(mm);TEMPERATURA MEDIA COMPENSADA, MENSAL(°C);",
        *(f"{_last_day(t.month)};null;{t.celsius:.1f};".replace(".", ",") for t in rows),
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
