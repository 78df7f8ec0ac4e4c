"""Synthetic stand-in for DATASUS + INMET: São Paulo's monthly mean temperature and seasonal
case counts per ICD-10 category of the KB, deterministic by seed.

Neither real source is reachable here, so training runs on this unless real files are given
(`MEDSERVE_TRIAGE_RULES_OCCURRENCES_CSV` / `..._TEMPERATURES_CSV`). Every figure trained on it
says `data_source: synthetic`.

Temperature: the INMET climatological normal 1991-2020 of São Paulo - Mirante de Santana
(station 83781, "temperatura média compensada"), rounded from memory of the published table:
about 23 °C in January-February, down to about 17 °C in June-July. A month = its normal + a
yearly anomaly (half the noise SD, the El Niño / La Niña years) + its own noise. With the
source's thresholds this makes most months `média`, the coldest `baixa` and a few hot summers
`alta`: São Paulo is mild, and the learner has to cope with that imbalance.

Counts: month m of a category with base b, peak month p, seasonal amplitude a and cold
sensitivity k has rate b·(1 + a·cos(2π(m - p)/12))·exp(-k·(T - normal)), times a log-normal
reporting noise, and a Poisson count. So both the season (viruses circulate in autumn-winter)
and the month's own cold spell move the count. Profiles are orders of magnitude of SUS
hospitalisations in the state of São Paulo, chosen by hand from the literature's seasonality
(influenza April-July, RSV bronchiolitis March-June, pneumonia and COPD in winter, pertussis in
spring-summer, tuberculosis flat): plausible shapes, not estimates of real figures.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, Field

from medserve.respiratory.climate.records import MonthlyCount, MonthlyTemperature
from medserve.respiratory.climate.settings import ClimateRulesSettings

# INMET normals 1991-2020, São Paulo - Mirante de Santana (83781), mean temperature, °C, Jan-Dec.
SAO_PAULO_NORMALS_C = (23.2, 23.5, 22.8, 21.1, 18.6, 17.4, 17.0, 18.1, 19.3, 20.6, 21.4, 22.6)


class SeasonalProfile(BaseModel):
    """How one ICD-10 category's monthly count moves with the season and the cold."""

    base: float = Field(gt=0, description="Mean monthly count (state of São Paulo).")
    peak_month: int = Field(ge=1, le=12)
    amplitude: float = Field(ge=0, lt=1, description="Seasonal swing, relative to base.")
    cold_sensitivity: float = Field(
        description="Relative change per °C below the month's normal (negative: more when hot)."
    )


# Keyed by ICD-10 category (DATASUS tabulates "Categoria CID-10"); every KB disease has one
# (tests/test_respiratory_climate_data.py checks it).
PROFILES: dict[str, SeasonalProfile] = {
    "J00": SeasonalProfile(base=150, peak_month=6, amplitude=0.35, cold_sensitivity=0.04),
    "J01": SeasonalProfile(base=120, peak_month=6, amplitude=0.30, cold_sensitivity=0.03),
    "J02": SeasonalProfile(base=250, peak_month=7, amplitude=0.25, cold_sensitivity=0.02),
    "J04": SeasonalProfile(base=200, peak_month=6, amplitude=0.30, cold_sensitivity=0.03),
    "J11": SeasonalProfile(base=300, peak_month=6, amplitude=0.80, cold_sensitivity=0.08),
    "J18": SeasonalProfile(base=8000, peak_month=7, amplitude=0.30, cold_sensitivity=0.04),
    "J20": SeasonalProfile(base=900, peak_month=6, amplitude=0.40, cold_sensitivity=0.05),
    "J21": SeasonalProfile(base=1500, peak_month=5, amplitude=0.70, cold_sensitivity=0.05),
    "J30": SeasonalProfile(base=30, peak_month=8, amplitude=0.30, cold_sensitivity=0.01),
    "J44": SeasonalProfile(base=1500, peak_month=7, amplitude=0.25, cold_sensitivity=0.04),
    "J45": SeasonalProfile(base=1800, peak_month=5, amplitude=0.30, cold_sensitivity=0.03),
    "U07": SeasonalProfile(base=2000, peak_month=6, amplitude=0.25, cold_sensitivity=0.02),
    "A16": SeasonalProfile(base=700, peak_month=9, amplitude=0.05, cold_sensitivity=0.0),
    "A37": SeasonalProfile(base=90, peak_month=12, amplitude=0.35, cold_sensitivity=-0.02),
    "I26": SeasonalProfile(base=400, peak_month=7, amplitude=0.10, cold_sensitivity=0.01),
}


def month_keys(start_year: int, months: int) -> list[str]:
    return [f"{start_year + i // 12}-{i % 12 + 1:02d}" for i in range(months)]


def temperatures(
    settings: ClimateRulesSettings, rng: np.random.Generator
) -> list[MonthlyTemperature]:
    """Monthly means around the São Paulo normals with yearly and monthly noise."""
    keys = month_keys(settings.start_year, settings.months)
    years = sorted({key[:4] for key in keys})
    anomaly = dict(
        zip(years, rng.normal(0, settings.temperature_noise_c / 2, len(years)), strict=True)
    )
    noise = rng.normal(0, settings.temperature_noise_c, len(keys))
    return [
        MonthlyTemperature(
            month=key,
            celsius=round(SAO_PAULO_NORMALS_C[int(key[5:]) - 1] + anomaly[key[:4]] + noise[i], 1),
        )
        for i, key in enumerate(keys)
    ]


def expected_count(profile: SeasonalProfile, calendar_month: int, celsius: float) -> float:
    """The rate before noise: season times the month's cold anomaly."""
    season = 1 + profile.amplitude * math.cos(
        2 * math.pi * (calendar_month - profile.peak_month) / 12
    )
    anomaly = celsius - SAO_PAULO_NORMALS_C[calendar_month - 1]
    return profile.base * season * math.exp(-profile.cold_sensitivity * anomaly)


def counts(
    codes: list[str],
    temps: list[MonthlyTemperature],
    settings: ClimateRulesSettings,
    rng: np.random.Generator,
) -> list[MonthlyCount]:
    """Poisson counts per category and month around `expected_count`, with log-normal noise."""
    rows = []
    for code in sorted(codes):
        profile = PROFILES[code]
        noise = rng.normal(0, settings.count_dispersion, len(temps))
        for i, temp in enumerate(temps):
            rate = expected_count(profile, int(temp.month[5:]), temp.celsius) * math.exp(noise[i])
            rows.append(MonthlyCount(icd=code, month=temp.month, count=int(rng.poisson(rate))))
    return rows


def generate(
    codes: list[str], settings: ClimateRulesSettings
) -> tuple[list[MonthlyCount], list[MonthlyTemperature]]:
    """Counts for `codes` (ICD-10 categories with a profile) and temperatures; same seed, same
    data."""
    unknown = sorted(set(codes) - set(PROFILES))
    if unknown:
        raise ValueError(f"no synthetic profile for {', '.join(unknown)}")
    rng = np.random.default_rng(settings.seed)
    temps = temperatures(settings, rng)
    return counts(codes, temps, settings, rng), temps
