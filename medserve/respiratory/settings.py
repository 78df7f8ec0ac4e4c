"""Respiratory triage settings (`MEDSERVE_TRIAGE_*`), beside the platform's shared `Settings`.

The numeric reading of the symbolic probabilities is a setting, not a constant, because it was
tuned on simulated patients (bench/respiratory_strategies.py) and a clinical review may move it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_KB_PATH = Path(__file__).resolve().parent / "kb" / "respiratory-kb.yaml"

StrategyName = Literal["source", "info_gain"]


class TriageSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDSERVE_TRIAGE_", extra="ignore")

    kb_path: Path = Field(default=DEFAULT_KB_PATH, description="The knowledge-base YAML file.")
    default_strategy: StrategyName = Field(
        default="info_gain",
        description="Strategy when a consult names none (the measured better one).",
    )
    # Numeric reading of the symbolic probabilities: P(symptom | disease), P(value | disease)
    # weight, and prior weight. Monotone (checked below). stop_probability and p_unlisted are the
    # values bench/respiratory_strategies.py chose on its tuning seed (README, docs/respiratory.md).
    p_sempre: float = Field(default=0.95, gt=0, lt=1)
    p_alta: float = Field(default=0.75, gt=0, lt=1)
    p_media: float = Field(default=0.45, gt=0, lt=1)
    p_baixa: float = Field(default=0.2, gt=0, lt=1)
    p_nunca: float = Field(default=0.03, gt=0, lt=1)
    p_unlisted: float = Field(
        default=0.03,
        gt=0,
        lt=1,
        description="P(yes) for a symptom the disease does not list: not impossible (patients "
        "and the KB are both imperfect), so the information-gain strategy does not exclude on it.",
    )
    stop_probability: float = Field(
        default=0.8,
        gt=0.5,
        le=1.0,
        description="Information gain stops asking once the top disease's posterior reaches this.",
    )
    min_gain_bits: float = Field(
        default=0.02,
        ge=0,
        description="Information gain stops when no question is expected to teach this much.",
    )
    focus_floor: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="Information gain: diseases below this posterior leave the focus (still "
        "ranked, never excluded by it: only a hard contradiction excludes).",
    )
    max_diagnoses: int = Field(default=5, ge=1, le=50, description="Diagnoses returned at the end.")

    @model_validator(mode="after")
    def _monotone(self) -> TriageSettings:
        ladder = [self.p_sempre, self.p_alta, self.p_media, self.p_baixa, self.p_nunca]
        if ladder != sorted(ladder, reverse=True) or len(set(ladder)) != len(ladder):
            raise ValueError("p_sempre > p_alta > p_media > p_baixa > p_nunca must hold")
        return self

    def reading(self) -> dict[str, float]:
        """Symbolic probability -> number (the `Symbolic` values of kb.py)."""
        return {
            "sempre": self.p_sempre,
            "alta": self.p_alta,
            "média": self.p_media,
            "baixa": self.p_baixa,
            "nunca": self.p_nunca,
        }


@lru_cache
def get_triage_settings() -> TriageSettings:
    return TriageSettings()
