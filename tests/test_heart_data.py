"""The heart code mapping, verified row by row against the UCI original on every run."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from medserve.heart.codes import FEATURES_BY_NAME, KAGGLE_COLUMNS
from medserve.heart.data import KAGGLE_CSV, TARGET, load_kaggle, load_uci_cleveland
from medserve.heart.features import to_matrix

# UCI's own spelling of each meaning we document.
UCI_TEXT = {
    "cp": {
        "asymptomatic": "asymptomatic",
        "atypical angina": "atypical angina",
        "non-anginal pain": "non-anginal",
        "typical angina": "typical angina",
    },
    "restecg": {
        "left-ventricular hypertrophy": "lv hypertrophy",
        "normal": "normal",
        "ST-T wave abnormality": "st-t abnormality",
    },
    "slp": {"downsloping": "downsloping", "flat": "flat", "upsloping": "upsloping"},
    "thall": {
        "fixed defect": "fixed defect",
        "normal": "normal",
        "reversible defect": "reversable defect",
    },
}
UCI_COLUMN = {"cp": "cp", "restecg": "restecg", "slp": "slope", "thall": "thal"}
MATCH_KEYS = ["age", "sex", "trestbps", "chol", "thalach", "oldpeak"]


@pytest.fixture(scope="module")
def matched() -> pd.DataFrame:
    """Kaggle rows joined to their UCI Cleveland row on six measured values."""
    kaggle = pd.read_csv(KAGGLE_CSV)
    uci = load_uci_cleveland().rename(columns={"thalch": "thalach"})
    uci["sex"] = (uci["sex"] == "Male").astype(int)
    uci = uci.drop_duplicates(subset=MATCH_KEYS, keep=False)
    kaggle = kaggle.drop_duplicates(subset=MATCH_KEYS, keep=False)
    return kaggle.merge(uci, on=MATCH_KEYS, suffixes=("_k", "_u"), validate="one_to_one")


def test_almost_every_row_matches_uniquely(matched: pd.DataFrame) -> None:
    assert len(matched) >= 295, len(matched)


def test_target_is_inverted_relative_to_uci(matched: pd.DataFrame) -> None:
    assert (matched["target"] == (matched["num"] == 0).astype(int)).all()
    assert (1 - matched["target"] == matched[TARGET]).all()


@pytest.mark.parametrize("feature", ["cp", "restecg", "slp", "thall"])
def test_categorical_codes_mean_what_we_document(matched: pd.DataFrame, feature: str) -> None:
    kaggle_col = next((k for k, v in KAGGLE_COLUMNS.items() if v == feature), feature) + "_k"
    uci_col = UCI_COLUMN[feature] + "_u"
    spec = FEATURES_BY_NAME[feature]
    present = matched[matched[uci_col].notna()]
    expected = present[kaggle_col].map(lambda code: UCI_TEXT[feature].get(spec.codes.get(code)))
    assert (expected == present[uci_col]).all()


@pytest.mark.parametrize(("feature", "uci_col"), [("caa", "ca_u"), ("thall", "thal_u")])
def test_missing_codes_are_missing_in_uci(
    matched: pd.DataFrame, feature: str, uci_col: str
) -> None:
    spec = FEATURES_BY_NAME[feature]
    kaggle_col = next(k for k, v in KAGGLE_COLUMNS.items() if v == feature) + "_k"
    flagged = matched[matched[kaggle_col].isin(spec.missing_codes)]
    assert len(flagged) >= 1
    assert flagged[uci_col].isna().all()


def test_vessel_count_matches_uci(matched: pd.DataFrame) -> None:
    present = matched[matched["ca_u"].notna()]
    assert (present["ca_k"] == present["ca_u"]).all()


def test_binary_codes_match_uci(matched: pd.DataFrame) -> None:
    assert (matched["fbs_k"] == matched["fbs_u"].astype(bool).astype(int)).all()
    assert (matched["exang_k"] == matched["exang_u"].astype(bool).astype(int)).all()


def test_canonical_frame_has_missing_as_nan_and_cad_target() -> None:
    frame = load_kaggle()
    assert len(frame) == 303
    assert frame["caa"].isna().sum() == 5  # the five `ca = 4` rows
    assert frame["thall"].isna().sum() == 2  # the two `thal = 0` rows
    assert frame[TARGET].sum() == 138  # UCI num >= 1


def test_to_matrix_maps_missing_codes_and_none() -> None:
    row = dict.fromkeys(FEATURES_BY_NAME, 1)
    matrix = to_matrix([row | {"caa": 4, "thall": 0}, row | {"caa": None, "thall": None}])
    caa, thall = list(FEATURES_BY_NAME).index("caa"), list(FEATURES_BY_NAME).index("thall")
    assert np.isnan(matrix[:, [caa, thall]]).all()
    assert not math.isnan(matrix[0, 0])
