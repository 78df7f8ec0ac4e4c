"""Load the heart tables and turn them into the model's canonical form.

Canonical form: the 13 source feature names in `FEATURE_NAMES` order, float64, missing codes as
NaN, and `cad` = 1 for coronary artery disease (the inverse of the Kaggle `target`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from medserve.heart.codes import FEATURE_NAMES, KAGGLE_COLUMNS
from medserve.heart.features import to_matrix
from medserve.settings import REPO_ROOT

DATA_DIR = REPO_ROOT / "data" / "heart"
KAGGLE_CSV = DATA_DIR / "heart_patients.csv"
UCI_CSV = DATA_DIR / "heart_disease_uci.csv"
TARGET = "cad"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (recorded with every trained model)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_kaggle(path: Path = KAGGLE_CSV) -> pd.DataFrame:
    """The 303-patient Kaggle copy in canonical form (features + `cad`)."""
    raw = pd.read_csv(path).rename(columns=KAGGLE_COLUMNS)
    frame = pd.DataFrame(to_matrix(raw.to_dict("records")), columns=list(FEATURE_NAMES))
    frame[TARGET] = 1 - raw["target"].astype(int)
    return frame


def load_uci_cleveland(path: Path = UCI_CSV) -> pd.DataFrame:
    """The UCI original's Cleveland rows, text codes kept, `cad` = (num >= 1)."""
    uci = pd.read_csv(path)
    cleveland = uci[uci["dataset"] == "Cleveland"].copy()
    cleveland[TARGET] = (cleveland["num"] >= 1).astype(int)
    return cleveland
