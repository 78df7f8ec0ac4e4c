"""Which data the mining learns from: the real DATASUS + INMET files when both are configured,
else the synthetic generator, for the ICD codes of the knowledge base."""

from __future__ import annotations

from collections.abc import Sequence

from medserve.respiratory.climate.inmet import load_inmet
from medserve.respiratory.climate.records import ClimateSeries, file_sha256, join
from medserve.respiratory.climate.settings import ClimateRulesSettings
from medserve.respiratory.climate.synthetic import generate
from medserve.respiratory.climate.tabnet import load_tabnet


def category(icd: str) -> str:
    """ICD-10 category of a code: J11.1 -> J11 (what TabNet's "Categoria CID-10" counts)."""
    return icd[:3]


def load_series(settings: ClimateRulesSettings, kb_codes: Sequence[str]) -> ClimateSeries:
    """The joined monthly series; raises `ClimateDataError` on a bad file."""
    if settings.occurrences_csv is not None and settings.temperatures_csv is not None:
        counts = load_tabnet(settings.occurrences_csv)
        temps = load_inmet(settings.temperatures_csv)
        hashes = {
            settings.occurrences_csv.name: file_sha256(settings.occurrences_csv),
            settings.temperatures_csv.name: file_sha256(settings.temperatures_csv),
        }
        return join(
            counts, temps, "datasus+inmet", settings.high_above_c, settings.low_below_c, hashes
        )
    counts, temps = generate(sorted({category(code) for code in kb_codes}), settings)
    return join(counts, temps, "synthetic", settings.high_above_c, settings.low_below_c)


def data_code(icd: str, series: ClimateSeries) -> str | None:
    """The series' code for a KB code: the code itself if tabulated, else its category."""
    if icd in series.by_icd:
        return icd
    return category(icd) if category(icd) in series.by_icd else None
