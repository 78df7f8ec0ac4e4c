"""Boundary types of the mining: a month's case count for one ICD-10 code, a month's mean
temperature, the joined series the learner reads, and the source's temperature classes."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TemperatureClass = Literal["alta", "média", "baixa"]
TEMPERATURE_CLASSES: tuple[TemperatureClass, ...] = ("baixa", "média", "alta")  # cold to hot
MONTH_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"
# Portuguese month abbreviations as TabNet and the KB's `mes` factor write them.
MONTH_ABBREVIATIONS = (
    "jan",
    "fev",
    "mar",
    "abr",
    "mai",
    "jun",
    "jul",
    "ago",
    "set",
    "out",
    "nov",
    "dez",
)
ICD_PATTERN = r"^[A-Z][0-9]{2}(\.[0-9]{1,2})?$"


class ClimateDataError(ValueError):
    """A data file that cannot be read: names the file, the line (1-based) and the reason."""

    def __init__(self, source: str, line: int | None, reason: str) -> None:
        self.source, self.line, self.reason = source, line, reason
        where = f"{source} line {line}" if line is not None else source
        super().__init__(f"{where}: {reason}")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MonthlyCount(_Frozen):
    icd: str = Field(pattern=ICD_PATTERN, description="ICD-10 category or subcategory (J11).")
    month: str = Field(pattern=MONTH_PATTERN, description="YYYY-MM.")
    count: int = Field(ge=0)


class MonthlyTemperature(_Frozen):
    month: str = Field(pattern=MONTH_PATTERN)
    # Bounds: anything outside is a unit or column mix-up, not a Brazilian monthly mean.
    celsius: float = Field(ge=-5.0, le=40.0)


class MonthObservation(_Frozen):
    """One learning example: a month, its occurrences of one ICD code and its temperature."""

    month: str = Field(pattern=MONTH_PATTERN)
    count: int = Field(ge=0)
    celsius: float
    temperature_class: TemperatureClass


class ClimateSeries(_Frozen):
    """The joined data, per ICD code, and where it came from."""

    data_source: Literal["synthetic", "datasus+inmet"]
    by_icd: dict[str, list[MonthObservation]]
    source_files_sha256: dict[str, str] = Field(default_factory=dict)

    def sha256(self) -> str:
        """Content hash of exactly what the learner saw (ICD, month, count, temperature)."""
        digest = hashlib.sha256()
        for icd in sorted(self.by_icd):
            for row in self.by_icd[icd]:
                digest.update(f"{icd};{row.month};{row.count};{row.celsius:.2f}\n".encode())
        return digest.hexdigest()


def classify(
    celsius: float, high_above_c: float = 24.0, low_below_c: float = 18.0
) -> TemperatureClass:
    """The source's classes: alta > 24 °C, média 18-24 °C (both ends included), baixa < 18 °C."""
    if celsius > high_above_c:
        return "alta"
    if celsius < low_below_c:
        return "baixa"
    return "média"


def join(
    counts: list[MonthlyCount],
    temperatures: list[MonthlyTemperature],
    data_source: Literal["synthetic", "datasus+inmet"],
    high_above_c: float = 24.0,
    low_below_c: float = 18.0,
    source_files_sha256: dict[str, str] | None = None,
) -> ClimateSeries:
    """Months that have both a count and a temperature, per ICD, in month order. A month missing
    on either side is left out (TabNet's `...` and INMET's `null` are missing, not zero)."""
    by_month = {t.month: t.celsius for t in temperatures}
    by_icd: dict[str, list[MonthObservation]] = {}
    for row in sorted(counts, key=lambda c: (c.icd, c.month)):
        if row.month not in by_month:
            continue
        celsius = by_month[row.month]
        by_icd.setdefault(row.icd, []).append(
            MonthObservation(
                month=row.month,
                count=row.count,
                celsius=celsius,
                temperature_class=classify(celsius, high_above_c, low_below_c),
            )
        )
    return ClimateSeries(
        data_source=data_source, by_icd=by_icd, source_files_sha256=source_files_sha256 or {}
    )


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
