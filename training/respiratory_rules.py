"""Mine and store the climate-occurrence rules of the respiratory KB's ICD codes (issue 20).

Data: the DATASUS + INMET files of `MEDSERVE_TRIAGE_RULES_OCCURRENCES_CSV` and
`..._TEMPERATURES_CSV`, else the synthetic generator. For every KB code: 1R-style count ranges
on ten folds (medserve/respiratory/climate/learner.py) beside a depth-limited decision tree and
the majority class on the same folds. The rules file, the card (rules, every fold's errors, the
comparison, data source and SHA-256) and a drift reference go to the model store.

Comparison framing: both learners predict the month's temperature class from its occurrence
count, the task the source's rules solve, so their errors on the same test months compare
directly; the tree differs only in how it places its cuts (Gini, depth limit) where the rules
use the error allowance.
"""

from __future__ import annotations

import platform
from importlib.metadata import version
from pathlib import Path
from statistics import mean

import numpy as np
import sklearn
from pydantic import BaseModel
from sklearn.tree import DecisionTreeClassifier

from medserve import model_store
from medserve.drift import ReferenceProfile, bin_categorical, bin_numeric
from medserve.respiratory.climate.learner import Learner, mine
from medserve.respiratory.climate.records import TEMPERATURE_CLASSES, ClimateSeries
from medserve.respiratory.climate.rules import MODEL_NAME, RULES_FILE, ClimateRules
from medserve.respiratory.climate.settings import ClimateRulesSettings
from medserve.respiratory.climate.sources import load_series
from medserve.respiratory.kb import KnowledgeBase, get_kb
from training.progress import ProgressCallback, Reporter


class RulesTrainResult(BaseModel):
    tag: str
    metrics: dict[str, float | int]
    report: str


def tree_learner(max_depth: int) -> Learner:
    """A depth-limited decision tree on the count alone: the same task as the rules."""

    def learn(train: list[int], classes: list[str], test: list[int]) -> list[str]:
        tree = DecisionTreeClassifier(max_depth=max_depth, random_state=0)
        tree.fit(np.asarray(train, dtype=float).reshape(-1, 1), classes)
        return tree.predict(np.asarray(test, dtype=float).reshape(-1, 1)).tolist()

    return learn


def reference(series: ClimateSeries) -> ReferenceProfile:
    """Drift reference of what the rules assume: the monthly mean temperature and its class
    (one row per month), the score being the month's total occurrences over the KB codes;
    `positive_rate` is the share of cold (`baixa`) months."""
    rows = [row for observations in series.by_icd.values() for row in observations]
    months = sorted({row.month for row in rows})
    first = {row.month: row for row in reversed(rows)}  # any row: a month has one temperature
    totals = dict.fromkeys(months, 0.0)
    for row in rows:
        totals[row.month] += row.count
    temps = np.array([first[m].celsius for m in months])
    classes = np.array(
        [float(TEMPERATURE_CLASSES.index(first[m].temperature_class)) for m in months]
    )
    return ReferenceProfile(
        features=[
            bin_numeric("temperature_c", temps),
            bin_categorical("temperature_class", classes),
        ],
        score=bin_numeric("monthly_occurrences", np.array([totals[m] for m in months])),
        positive_rate=float(np.mean(classes == 0)),
        n_rows=len(months),
    )


def markdown_table(rules: ClimateRules) -> str:
    """Per ICD: the kept fold's rules error, the mean over folds, the tree's, the majority's."""
    lines = [
        f"Climate-occurrence rules ({rules.data_source} data, {rules.months} months, "
        f"{len(next(iter(rules.icds.values())).folds) if rules.icds else 0} folds)",
        "",
        "| ICD-10 | ranges | 1R error, best fold | 1R error, mean | tree error, best fold "
        "| tree error, mean | majority error, mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for icd, found in sorted(rules.icds.items()):
        lines.append(
            f"| {icd} | {len(found.rules)} | {found.rules_error_best:.3f} | "
            f"{found.rules_error_mean:.3f} | {found.tree_error_best:.3f} | "
            f"{found.tree_error_mean:.3f} | {found.majority_error_mean:.3f} |"
        )
    summary = _summary(rules)
    lines.append(
        f"| **mean** | | {summary['rules_error_best']:.3f} | {summary['rules_error_mean']:.3f} | "
        f"{summary['tree_error_best']:.3f} | {summary['tree_error_mean']:.3f} | "
        f"{summary['majority_error_mean']:.3f} |"
    )
    return "\n".join(lines)


def _summary(rules: ClimateRules) -> dict[str, float]:
    keys = ("rules_error_best", "rules_error_mean", "tree_error_best", "tree_error_mean",
            "majority_error_mean")  # fmt: skip
    return {key: mean(getattr(r, key) for r in rules.icds.values()) for key in keys}


def train(
    settings: ClimateRulesSettings | None = None,
    kb: KnowledgeBase | None = None,
    progress: ProgressCallback | None = None,
) -> RulesTrainResult:
    settings = settings or ClimateRulesSettings()
    kb = kb or get_kb()
    report = Reporter(MODEL_NAME, progress)
    report("loading data", total=1)
    codes = [d.icd10 for d in kb.diseases]
    series = load_series(settings, codes)
    report("mining rules", total=1)
    rules = mine(series, codes, settings, tree_learner(settings.tree_max_depth))
    if not rules.icds:
        raise ValueError("no KB ICD code has enough months of data to learn rules")
    summary = _summary(rules)
    # `accuracy` (1 - mean fold error of the rules) is what `medserve train/models` print.
    metrics: dict[str, float | int] = summary | {
        "accuracy": 1 - summary["rules_error_mean"],
        "n_train": rules.months,
        "icd_codes": len(rules.icds),
    }
    table = markdown_table(rules)
    metadata = {
        "metrics": metrics,
        # bentoml metadata takes no None: unset file paths are left out (data_source says it).
        "params": settings.model_dump(mode="json", exclude_none=True),
        "training_data_sha256": rules.data_sha256,
        "data_source": rules.data_source,
        "source_files_sha256": series.source_files_sha256,
        "kb_version": kb.version,
        "kb_sha256": kb.sha256,
        "medserve_version": version("medserve"),
        "sklearn_version": sklearn.__version__,
        "python_version": platform.python_version(),
    }
    card = metadata | {
        "rules": rules.model_dump(mode="json"),
        "missing": sorted(set(codes) - set(rules.icds)),
        "comparison": (
            "Both learners predict the temperature class of a month from its occurrence count, "
            f"on the same {settings.folds} folds; the tree is sklearn's DecisionTreeClassifier, "
            f"max_depth={settings.tree_max_depth}."
        ),
        "report": table,
    }
    report("saving", completed=1, total=1)
    with model_store.create_model(MODEL_NAME, metadata, card, reference(series)) as model:
        (Path(model.path) / RULES_FILE).write_text(rules.model_dump_json(indent=2))
    return RulesTrainResult(tag=str(model.tag), metrics=metrics, report=table)
