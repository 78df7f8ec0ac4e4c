"""Lung CT service settings (`MEDSERVE_CT_*`), beside the platform's shared `Settings`."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Runtime = Literal["onnx", "keras"]


class CtSettings(BaseSettings):
    """What a deployment tunes: the display window, the input limits, the runtime, the OOD gate."""

    model_config = SettingsConfigDict(env_prefix="MEDSERVE_CT_", extra="ignore")

    window_center: float = Field(default=-600.0, description="Lung window level (HU).")
    window_width: float = Field(default=1500.0, gt=0, description="Lung window width (HU).")
    max_image_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="Largest accepted file (a 512x512 16-bit slice is ~0.5 MiB uncompressed).",
    )
    min_image_side: int = Field(default=64, ge=16, description="Smaller images are refused.")
    max_image_side: int = Field(default=2048, ge=64, description="Larger images are refused.")
    runtime: Runtime = Field(
        default="onnx",
        description="`onnx`: ONNX Runtime (faster than Keras on CPU, equal within 1e-3: "
        "bench/ct_serving.py); `keras`: TensorFlow.",
    )
    max_batch_size: int = Field(
        default=0,
        ge=0,
        description="Slices per model call; 0 = by model input: 4 up to 256 px, 1 above. On CPU "
        "ONNX Runtime is no faster per slice in bigger batches (at 512 px, 4-slice calls are "
        "25 % slower than single ones) while its arena grows by ~8 MiB per 512-px slice; "
        "MEDSERVE_MAX_BATCH_SIZE caps it too.",
    )
    concurrent_batches: int = Field(
        default=0,
        ge=0,
        description="Batches computed at once per worker (ONNX Runtime calls in threads); "
        "0 = one per core: the cores (CPU affinity, capped by MEDSERVE_CPU_LIMIT, which the "
        "chart sets from the pod's CPU limit) divided by MEDSERVE_WORKERS.",
    )
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        description="Threads per model call; 0 = the worker's cores / concurrent batches.",
    )
    saliency: bool = Field(
        default=True, description="Serve `POST /saliency` (loads the Keras model for gradients)."
    )
    min_lung_fraction: float = Field(
        default=0.12,
        ge=0,
        le=1,
        description="Below this share of lung-density pixels in the body the slice is flagged "
        "out of distribution (head, abdomen, or a slice outside the lungs).",
    )
    min_confidence: float = Field(
        default=0.7, ge=0.5, le=1, description="Below this top probability: `low_confidence`."
    )


@lru_cache
def get_ct_settings() -> CtSettings:
    return CtSettings()
