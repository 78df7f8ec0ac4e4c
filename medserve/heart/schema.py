"""Pydantic boundary models of the heart service, generated from `codes.FEATURES`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from medserve.heart.codes import CLASS_LABELS, FEATURES, FeatureSpec


def _field_for(spec: FeatureSpec) -> tuple[Any, Any]:
    """The pydantic (type, FieldInfo) pair for one feature; every field is required."""
    description = f"{spec.description}. Allowed: {spec.allowed_text()}."
    if spec.codes:
        allowed = sorted(set(spec.codes) | set(spec.missing_codes))
        kind = int | None if spec.missing_codes else int
        return kind, Field(..., description=description, json_schema_extra={"enum": allowed})
    number = int if spec.integer else float
    return number, Field(..., ge=spec.minimum, le=spec.maximum, description=description)


def _check_codes(cls: type[BaseModel], value: int | None, info: Any) -> int | None:
    spec = FEATURES_BY_FIELD[info.field_name]
    if value is None:
        return None
    if value not in spec.codes and value not in spec.missing_codes:
        raise ValueError(f"not an allowed code ({spec.allowed_text()})")
    return value


FEATURES_BY_FIELD = {spec.name: spec for spec in FEATURES}
_CODED = [spec.name for spec in FEATURES if spec.codes]

HeartPatient: type[BaseModel] = create_model(
    "HeartPatient",
    __config__=ConfigDict(extra="forbid", strict=True, allow_inf_nan=False),
    __doc__="One patient's 13 attributes, with the Kaggle/UCI column names and codes.",
    __validators__={"codes": field_validator(*_CODED)(classmethod(_check_codes))},
    **{spec.name: _field_for(spec) for spec in FEATURES},
)


class HeartPrediction(BaseModel):
    """The answer for one patient."""

    model_config = ConfigDict(populate_by_name=True)

    prediction_id: str = Field(description="ULID of this prediction in the prediction log.")
    predicted_class: int = Field(
        alias="class", description="1 = coronary artery disease, 0 = none."
    )
    label: str
    probabilities: dict[str, float] = Field(
        description=f"Probability of each class: {', '.join(CLASS_LABELS)}."
    )


EXAMPLE_PATIENT: dict[str, int | float | None] = {
    "age": 63,
    "sex": 1,
    "cp": 3,
    "trtbps": 145.0,
    "chol": 233.0,
    "fbs": 1,
    "restecg": 0,
    "thalachh": 150.0,
    "exng": 0,
    "oldpeak": 2.3,
    "slp": 0,
    "caa": 0,
    "thall": 1,
}
