"""ECG service settings (`MEDSERVE_ECG_*`), beside the platform's shared `Settings`."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EcgSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDSERVE_ECG_", extra="ignore")

    strip_min_seconds: float = Field(
        default=3.0, gt=0, description="Shorter strips hold too few beats for a heart rate."
    )
    strip_max_seconds: float = Field(
        default=120.0, gt=0, description="Longer recordings should be sent in pieces."
    )
    review_page_size: int = Field(default=50, ge=1, le=500)


@lru_cache
def get_ecg_settings() -> EcgSettings:
    return EcgSettings()
