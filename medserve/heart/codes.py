"""The 13 heart attributes: names, units, clinical ranges and the TRUE meaning of every code.

The Kaggle "heart attack analysis" copy of the UCI Cleveland table inverts the target and permutes
several codes. Everything below was verified row by row against the UCI original
(`data/heart/heart_disease_uci.csv`; `tests/test_heart_data.py` re-checks it on every run).
This module is the single source of truth for the API schema, the form, the docs and training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FeatureKind = Literal["numeric", "binary", "categorical"]


@dataclass(frozen=True)
class FeatureSpec:
    """One input attribute as clients send it (Kaggle column name and coding)."""

    name: str
    kind: FeatureKind
    label_pt: str
    description: str
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = False
    codes: dict[int, str] = field(default_factory=dict)
    missing_codes: tuple[int, ...] = ()

    def allowed_text(self) -> str:
        """Human-readable allowed values, used in 422 messages and the docs."""
        if self.codes:
            allowed = ", ".join(f"{c} ({m})" for c, m in self.codes.items())
            if self.missing_codes:
                missing = "/".join(str(c) for c in self.missing_codes)
                allowed += f"; null or {missing} = missing"
            return allowed
        return f"{self.minimum:g}-{self.maximum:g} {self.unit}".strip()


FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec("age", "numeric", "Idade", "Age", "years", 1, 120, integer=True),
    FeatureSpec("sex", "binary", "Sexo", "Sex", codes={0: "female", 1: "male"}),
    FeatureSpec(
        "cp",
        "categorical",
        "Tipo de dor no peito",
        "Chest-pain type",
        codes={
            0: "asymptomatic",
            1: "atypical angina",
            2: "non-anginal pain",
            3: "typical angina",
        },
    ),
    FeatureSpec(
        "trtbps",
        "numeric",
        "Pressão arterial em repouso",
        "Resting blood pressure",
        "mmHg",
        50,
        250,
    ),
    FeatureSpec("chol", "numeric", "Colesterol sérico", "Serum cholesterol", "mg/dl", 80, 700),
    FeatureSpec(
        "fbs",
        "binary",
        "Glicemia em jejum > 120 mg/dl",
        "Fasting blood sugar > 120 mg/dl",
        codes={0: "no", 1: "yes"},
    ),
    FeatureSpec(
        "restecg",
        "categorical",
        "Eletrocardiograma em repouso",
        "Resting ECG",
        codes={0: "left-ventricular hypertrophy", 1: "normal", 2: "ST-T wave abnormality"},
    ),
    FeatureSpec(
        "thalachh", "numeric", "Frequência cardíaca máxima", "Maximum heart rate", "bpm", 40, 250
    ),
    FeatureSpec(
        "exng",
        "binary",
        "Angina induzida por exercício",
        "Exercise-induced angina",
        codes={0: "no", 1: "yes"},
    ),
    FeatureSpec(
        "oldpeak", "numeric", "Depressão do segmento ST", "ST depression by exercise", "mm", 0, 10
    ),
    FeatureSpec(
        "slp",
        "categorical",
        "Inclinação do segmento ST",
        "Slope of the peak exercise ST segment",
        codes={0: "downsloping", 1: "flat", 2: "upsloping"},
    ),
    FeatureSpec(
        "caa",
        "numeric",
        "Vasos principais corados (fluoroscopia)",
        "Major vessels coloured by fluoroscopy",
        "vessels",
        0,
        3,
        integer=True,
        codes={0: "0 vessels", 1: "1 vessel", 2: "2 vessels", 3: "3 vessels"},
        missing_codes=(4,),
    ),
    FeatureSpec(
        "thall",
        "categorical",
        "Teste de estresse com tálio",
        "Thallium stress test",
        codes={1: "fixed defect", 2: "normal", 3: "reversible defect"},
        missing_codes=(0,),
    ),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURES_BY_NAME: dict[str, FeatureSpec] = {f.name: f for f in FEATURES}

# Kaggle file column -> source feature name.
KAGGLE_COLUMNS: dict[str, str] = {
    "trestbps": "trtbps",
    "thalach": "thalachh",
    "exang": "exng",
    "slope": "slp",
    "ca": "caa",
    "thal": "thall",
}

# Model output classes: the clinically meaningful event, with the right sign.
CLASS_LABELS: tuple[str, str] = ("no_coronary_artery_disease", "coronary_artery_disease")
CLASS_DESCRIPTION = (
    "1 = coronary artery disease (> 50 % diameter narrowing of a major vessel at angiography; "
    "UCI `num` >= 1). The Kaggle `target`/`output` column is its inverse."
)
