"""Settings of the climate-occurrence mining (`MEDSERVE_TRIAGE_RULES_*`).

The temperature thresholds are the source's (alta > 24 °C, baixa < 18 °C); the learner's error
allowance is the source's too (2 off-class months per range). The synthetic generator's knobs
live here as well, so a run's card can record exactly what made its data.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ClimateRulesSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDSERVE_TRIAGE_RULES_", extra="ignore")

    occurrences_csv: Path | None = Field(
        default=None,
        description="DATASUS TabNet export (monthly counts by ICD-10, state of São Paulo). With "
        "temperatures_csv: train on the real files; without: on the synthetic generator.",
    )
    temperatures_csv: Path | None = Field(
        default=None, description="INMET BDMEP export of monthly mean temperatures (one station)."
    )
    high_above_c: float = Field(default=24.0, description="Mean temperature above: class alta.")
    low_below_c: float = Field(default=18.0, description="Mean temperature below: class baixa.")
    max_off_class: int = Field(
        default=2, ge=0, description="Off-class months a count range may hold (the source's 2)."
    )
    folds: int = Field(default=10, ge=2, le=60, description="Folds (90 % learn / 10 % test).")
    fold_seed: int = Field(default=20, description="Shuffles the months into folds.")
    tree_max_depth: int = Field(
        default=2, ge=1, le=6, description="Depth of the decision tree the rules are compared to."
    )
    # Synthetic generator (medserve/respiratory/climate/synthetic.py).
    seed: int = Field(default=7, description="Synthetic data seed (same seed, same data).")
    start_year: int = Field(default=2015, ge=1990, le=2100)
    months: int = Field(default=60, ge=12, le=600, description="Months generated (source: ~60).")
    temperature_noise_c: float = Field(
        default=1.0, ge=0, le=5, description="SD of a month's mean around the 1991-2020 normal."
    )
    count_dispersion: float = Field(
        default=0.08,
        ge=0,
        le=1,
        description="Extra-Poisson noise: SD of a month's log-rate (reporting, outbreaks).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ClimateRulesSettings:
        if self.low_below_c >= self.high_above_c:
            raise ValueError("low_below_c must be below high_above_c")
        if (self.occurrences_csv is None) != (self.temperatures_csv is None):
            raise ValueError("set both occurrences_csv and temperatures_csv, or neither")
        return self
