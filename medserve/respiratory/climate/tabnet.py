"""Loader of DATASUS TabNet exports: monthly case counts by ICD-10 code (state of São Paulo).

Layout assumed (TabNet's "Exporta para CSV" / "Copia como .CSV", e.g. SIH/SUS "Morbidade
Hospitalar do SUS - por local de internação - São Paulo" with Linha = "Categoria CID-10" and
Coluna = "Ano/mês atendimento", or the two swapped):

    Morbidade Hospitalar do SUS - por local de internação - São Paulo     <- title lines
    Internações por Categoria CID-10 e Ano/mês atendimento
    Período:Jan/2015-Dez/2019
    "Categoria CID-10";"2015/Jan";"2015/Fev";...;"Total"                   <- header
    "J11   Influenza devida a vírus não identificado";"312";"-";...;"4.321"
    "Total";"...";...                                                       <- end of data
    Fonte: Ministério da Saúde - Sistema de Informações Hospitalares do SUS (SIH/SUS)
    Notas: ...                                                              <- footer

- `;`-separated, cells optionally in double quotes, latin-1 (UTF-8 accepted too: a file
  re-saved by a spreadsheet).
- Months are written `2015/Jan` (TabNet's `Ano/mês` labels, Portuguese abbreviations); `Jan/2015`
  is accepted as well. Either axis may hold the months; the other holds ICD-10 labels that start
  with the code (`J11`, `J11.1`). TabNet's grouped "Lista Morb CID-10" rows (`10-072 Influenza`)
  carry no code and are refused with a message saying so.
- Counts use `.` as thousands separator; `-` is zero; `...` or an empty cell is "not
  available" and that month is left out for that code (never read as zero).
- The `Total` column and the `Total` row are TabNet's sums, dropped; the data ends at the `Total`
  row or at the first line that is not a table row (the footer).
These are assumptions from TabNet's documented export conventions (`-` = zero, `...` = not
available) and public parsers of its CSVs, not from a file downloaded here (no network).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from medserve.respiratory.climate.records import (
    MONTH_ABBREVIATIONS,
    ClimateDataError,
    MonthlyCount,
)

_YEAR_MONTH = re.compile(r"^(\d{4})/([A-Za-zÀ-ÿ]{3})$")
_MONTH_YEAR = re.compile(r"^([A-Za-zÀ-ÿ]{3})/(\d{4})$")
_ICD_LABEL = re.compile(r"^([A-Z][0-9]{2}(?:\.[0-9]{1,2})?)(?:\s|$)")
_LISTA_MORB = re.compile(r"^\d{2}-\d{3}\b")
ZERO, NOT_AVAILABLE = "-", "..."


def period(label: str) -> str | None:
    """`2015/Jan` or `Jan/2015` -> `2015-01`; None if the label is not a month."""
    text = label.strip()
    match = _YEAR_MONTH.match(text)
    year, name = match.groups() if match else (None, None)
    if match is None and (match := _MONTH_YEAR.match(text)):
        name, year = match.groups()
    if year is None or name is None or name.lower() not in MONTH_ABBREVIATIONS:
        return None
    return f"{year}-{MONTH_ABBREVIATIONS.index(name.lower()) + 1:02d}"


def icd_code(label: str) -> str | None:
    match = _ICD_LABEL.match(label.strip())
    return match.group(1) if match else None


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # TabNet's own encoding; never fails


def _count(cell: str, source: str, line: int) -> int | None:
    text = cell.strip()
    if text == ZERO:
        return 0
    if text in (NOT_AVAILABLE, ""):
        return None
    if not re.fullmatch(r"\d{1,3}(\.\d{3})*|\d+", text):
        raise ClimateDataError(source, line, f"{text[:20]!r} is not a case count")
    return int(text.replace(".", ""))


def _is_header(cells: list[str]) -> bool:
    labels = [c for c in cells[1:] if c.strip() and c.strip() != "Total"]
    return bool(labels) and (all(period(c) for c in labels) or all(icd_code(c) for c in labels))


def _row_key(label: str, months_in_columns: bool, source: str, line: int) -> str:
    key = icd_code(label) if months_in_columns else period(label)
    if key is not None:
        return key
    if months_in_columns and _LISTA_MORB.match(label.strip()):
        reason = "a 'Lista Morb CID-10' group has no ICD-10 code: export by 'Categoria CID-10'"
    else:
        wanted = "an ICD-10 code (J11 ...)" if months_in_columns else "a month (2015/Jan)"
        reason = f"row label {label.strip()[:40]!r} does not start with {wanted}"
    raise ClimateDataError(source, line, reason)


def parse_tabnet(text: str, source: str = "tabnet.csv") -> list[MonthlyCount]:
    """Every (ICD code, month, count) of a TabNet export; raises `ClimateDataError`."""
    rows = list(csv.reader(text.splitlines(), delimiter=";", quotechar='"'))
    start = next((i for i, cells in enumerate(rows) if len(cells) >= 2 and _is_header(cells)), None)
    if start is None:
        raise ClimateDataError(source, None, "no header line with months or ICD-10 codes found")
    header = [c.strip() for c in rows[start]]
    months_in_columns = all(period(c) for c in header[1:] if c and c != "Total")
    columns = [
        (i, period(c) if months_in_columns else icd_code(c))
        for i, c in enumerate(header)
        if i and c and c != "Total"
    ]
    found: dict[tuple[str, str], MonthlyCount] = {}
    for offset, cells in enumerate(rows[start + 1 :], start=start + 2):
        if len(cells) < 2 or cells[0].strip().startswith("Total"):
            break  # the Total row or the footer
        if len(cells) != len(header):
            raise ClimateDataError(
                source, offset, f"{len(cells)} fields where the header has {len(header)}"
            )
        key = _row_key(cells[0], months_in_columns, source, offset)
        for index, column in columns:
            count = _count(cells[index], source, offset)
            if count is None or column is None:
                continue
            icd, month = (key, column) if months_in_columns else (column, key)
            if (icd, month) in found:
                raise ClimateDataError(source, offset, f"{icd} {month} appears twice")
            try:
                found[(icd, month)] = MonthlyCount(icd=icd, month=month, count=count)
            except ValidationError as exc:
                raise ClimateDataError(source, offset, exc.errors()[0]["msg"]) from None
    if not found:
        raise ClimateDataError(source, start + 1, "the table has no data rows")
    return sorted(found.values(), key=lambda c: (c.icd, c.month))


def load_tabnet(path: Path) -> list[MonthlyCount]:
    return parse_tabnet(_decode(path.read_bytes()), path.name)


def _label(month: str) -> str:
    year, number = month.split("-")
    return f"{year}/{MONTH_ABBREVIATIONS[int(number) - 1].capitalize()}"


def _shown(count: int | None) -> str:
    if count is None:
        return NOT_AVAILABLE
    return ZERO if count == 0 else f"{count:,}".replace(",", ".")


def _row(label: str, cells: list[str]) -> str:
    return ";".join(f'"{cell}"' for cell in [label, *cells])


def write_tabnet(counts: Iterable[MonthlyCount], path: Path, titles: dict[str, str]) -> None:
    """Write counts as TabNet exports them (ICD rows, `Ano/mês` columns, totals, footer,
    latin-1), so the real-file path can be exercised end to end on synthetic data."""
    table: dict[str, dict[str, int]] = {}
    for row in counts:
        table.setdefault(row.icd, {})[row.month] = row.count
    months = sorted({m for by_month in table.values() for m in by_month})
    lines = [
        "Morbidade Hospitalar do SUS - por local de internação - São Paulo",
        "Internações por Categoria CID-10 e Ano/mês atendimento",
        f"Período:{_label(months[0])}-{_label(months[-1])}",
        ";".join(['"Categoria CID-10"', *(f'"{_label(m)}"' for m in months), '"Total"']),
    ]
    for icd in sorted(table):
        cells = [table[icd].get(m) for m in months]
        label = f"{icd} {titles.get(icd, '')}".strip()
        lines.append(_row(label, [*(_shown(c) for c in cells), _shown(sum(c or 0 for c in cells))]))
    sums = [sum(table[icd].get(m) or 0 for icd in table) for m in months]
    lines.append(_row("Total", [_shown(s) for s in [*sums, sum(sums)]]))
    lines += [
        "Fonte: Ministério da Saúde - Sistema de Informações Hospitalares do SUS (SIH/SUS)",
        "Notas:",
    ]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("latin-1"))
