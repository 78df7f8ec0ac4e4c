"""Patients for service tests: real rows of the held-out data, and clearly shifted ones."""

from __future__ import annotations

import math
from typing import Any

from medserve.heart.codes import FEATURE_NAMES
from medserve.heart.data import load_kaggle
from medserve.heart.schema import EXAMPLE_PATIENT

REVERSE_MISSING = {"caa": None, "thall": None}


def dataset_patients() -> list[dict[str, Any]]:
    """All 303 patients as API payloads (missing values as null)."""
    frame = load_kaggle()
    patients = []
    for row in frame[list(FEATURE_NAMES)].to_dict("records"):
        patient: dict[str, Any] = {}
        for name, value in row.items():
            if isinstance(value, float) and math.isnan(value):
                patient[name] = REVERSE_MISSING[name]
            elif name == "oldpeak" or name in ("trtbps", "chol", "thalachh"):
                patient[name] = float(value)
            else:
                patient[name] = int(value)
        patients.append(patient)
    return patients


def shifted(patient: dict[str, Any]) -> dict[str, Any]:
    """An older, hypercholesterolaemic, hypertensive version of a patient (covariate shift)."""
    return patient | {
        "age": min(120, patient["age"] + 30),
        "chol": min(700.0, patient["chol"] * 1.8),
        "trtbps": min(250.0, patient["trtbps"] + 50),
        "thalachh": max(40.0, patient["thalachh"] - 60),
    }


VALID_PATIENT: dict[str, Any] = dict(EXAMPLE_PATIENT)
