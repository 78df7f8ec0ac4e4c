"""The mined climate-occurrence rules as the service reads them: pydantic, JSON, cheap to import.

`ClimateRules.load(tag)` reads a trained `respiratory_rules` model from the model store (bentoml
is imported only then), `ClimateRules.from_folder(path)` a model folder; `rules_for(icd)` gives one
ICD code's rules and evaluation, `insight(icd, temperature_class, month)` a short Portuguese
sentence for the final explanation of a consult. No sklearn, numpy or Ray here.
"""

from __future__ import annotations

from pathlib import Path
from statistics import median
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from medserve.respiratory.climate.records import (
    MONTH_ABBREVIATIONS,
    TEMPERATURE_CLASSES,
    TemperatureClass,
)

RULES_FILE = "climate_rules.json"
MODEL_NAME = "respiratory_rules"
MONTH_NAMES = ("janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto",
               "setembro", "outubro", "novembro", "dezembro")  # fmt: skip
MIN_CLASS_MONTHS = 3  # fewer months of a class say nothing about its typical count


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CountRange(_Model):
    """One rule: occurrences in [lower, upper) -> temperature class (None: unbounded)."""

    lower: float | None
    upper: float | None
    temperature_class: TemperatureClass
    months: int = Field(ge=0, description="Training months in the range.")
    off_class: int = Field(ge=0, description="Training months of another class in it.")
    merged: bool = Field(
        default=False, description="Adjacent same-class ranges merged (1R's last step)."
    )

    def contains(self, count: float) -> bool:
        return (self.lower is None or count >= self.lower) and (
            self.upper is None or count < self.upper
        )

    def text(self) -> str:
        if self.lower is None and self.upper is None:
            return "qualquer número de casos"
        if self.lower is None:
            return f"menos de {self.upper:g} casos"
        if self.upper is None:
            return f"{self.lower:g} casos ou mais"
        return f"de {self.lower:g} a menos de {self.upper:g} casos"


class ClassOccurrence(_Model):
    """The inverse reading: in months of this class, how many cases (all months of the data)."""

    temperature_class: TemperatureClass
    months: int = Field(ge=0)
    median: float | None = None
    low: float | None = Field(default=None, description="25th percentile of the monthly count.")
    high: float | None = Field(default=None, description="75th percentile.")


class FoldScore(_Model):
    """Test error (share of misclassified test months) of each learner on one fold."""

    fold: int = Field(ge=0)
    train_months: int = Field(ge=1)
    test_months: int = Field(ge=1)
    rules_error: float = Field(ge=0, le=1)
    tree_error: float = Field(ge=0, le=1)
    majority_error: float = Field(ge=0, le=1)


class IcdRules(_Model):
    """One ICD code's rules (learned on the chosen fold's 90 %) and every fold's evaluation."""

    icd: str = Field(description="The KB's ICD-10 code (J11.1).")
    data_code: str = Field(description="The code the counts are tabulated under (J11).")
    rules: list[CountRange]
    by_class: list[ClassOccurrence]
    peak_months: list[int] = Field(description="Calendar months with the highest mean count.")
    folds: list[FoldScore]
    chosen_fold: int = Field(description="The fold whose rules are kept: lowest rules error.")
    rules_error_best: float
    rules_error_mean: float
    tree_error_best: float
    tree_error_mean: float
    majority_error_mean: float

    def predict(self, count: float) -> TemperatureClass:
        return next(r.temperature_class for r in self.rules if r.contains(count))

    def rule_lines(self) -> list[str]:
        """The rules as the source read them: "occurrences in [a, b) -> class"."""
        return [f"{r.text()} por mês -> temperatura {r.temperature_class}" for r in self.rules]

    def occurrence(self, temperature_class: TemperatureClass) -> ClassOccurrence:
        return next(c for c in self.by_class if c.temperature_class == temperature_class)


class ClimateRules(_Model):
    """Everything one training run mined (the model store's `climate_rules.json`)."""

    data_source: Literal["synthetic", "datasus+inmet"]
    data_sha256: str
    months: int
    high_above_c: float
    low_below_c: float
    max_off_class: int
    icds: dict[str, IcdRules]

    @classmethod
    def from_folder(cls, folder: Path) -> ClimateRules:
        return cls.model_validate_json((folder / RULES_FILE).read_text())

    @classmethod
    def load(cls, tag: str) -> ClimateRules:
        """Rules of a stored `respiratory_rules` model (`respiratory_rules:latest` works)."""
        from medserve import model_store  # bentoml: only when a model is actually loaded

        return cls.from_folder(model_store.model_folder(tag))

    def rules_for(self, icd: str) -> IcdRules | None:
        """By the KB's code (J11.1), or by the category the counts use (J11)."""
        code = icd.strip().upper()
        if code in self.icds:
            return self.icds[code]
        return next((r for r in self.icds.values() if r.data_code == code), None)

    def class_label(self, temperature_class: TemperatureClass) -> str:
        return {
            "baixa": f"frios (< {self.low_below_c:g} °C)",
            "média": f"amenos ({self.low_below_c:g}-{self.high_above_c:g} °C)",
            "alta": f"quentes (> {self.high_above_c:g} °C)",
        }[temperature_class]

    def insight(
        self, icd: str, temperature_class: str | None = None, month: str | None = None
    ) -> str | None:
        """A short Portuguese sentence for a consult's explanation, or None without rules.

        `temperature_class`: `alta` | `média` (or the KB's `media`) | `baixa`; `month`: the KB's
        `jan`...`dez` or `1`...`12`. Unknown values are ignored, not errors: the sentence is
        an aside of the diagnosis.
        """
        rules = self.rules_for(icd)
        if rules is None:
            return None
        parts = [_contrast(self, rules)]
        chosen = _temperature_class(temperature_class)
        if chosen is not None:
            parts.append(_typical(self, rules, chosen))
        number = _month_number(month)
        if number is not None and rules.peak_months:
            parts.append(_season(rules, number))
        source = "dados sintéticos" if self.data_source == "synthetic" else "DATASUS e INMET"
        return " ".join(parts) + f" (Fonte: {source}, {self.months} meses.)"


def _temperature_class(value: str | None) -> TemperatureClass | None:
    folded = (value or "").strip().lower().replace("é", "e")
    return next((c for c in TEMPERATURE_CLASSES if c.replace("é", "e") == folded), None)


def _month_number(value: str | None) -> int | None:
    text = (value or "").strip().lower()
    if text in MONTH_ABBREVIATIONS:
        return MONTH_ABBREVIATIONS.index(text) + 1
    return int(text) if text.isdigit() and 1 <= int(text) <= 12 else None


def _contrast(rules_file: ClimateRules, rules: IcdRules) -> str:
    known = [c for c in rules.by_class if c.months >= MIN_CLASS_MONTHS and c.median is not None]
    if len(known) < 2:
        return f"Em São Paulo, os casos de {rules.icd} não puderam ser comparados entre climas."
    most = max(known, key=lambda c: c.median or 0)
    least = min(known, key=lambda c: c.median or 0)
    most_label = rules_file.class_label(most.temperature_class)
    least_label = rules_file.class_label(least.temperature_class)
    return (
        f"Em São Paulo, {rules.icd} tem mais casos em meses {most_label}: mediana de "
        f"{most.median:.0f} casos por mês, contra {least.median:.0f} em meses {least_label}."
    )


def _typical(rules_file: ClimateRules, rules: IcdRules, chosen: TemperatureClass) -> str:
    found = rules.occurrence(chosen)
    label = rules_file.class_label(chosen)
    if found.months == 0 or found.low is None or found.high is None:
        return f"Não houve meses {label} nos dados."
    if found.months < MIN_CLASS_MONTHS:
        return f"Só {found.months} mês(es) {label} nos dados: pouco para dizer o típico."
    return (
        f"Em meses {label}, as ocorrências ficam tipicamente entre {found.low:.0f} e "
        f"{found.high:.0f} por mês ({found.months} meses observados)."
    )


def _season(rules: IcdRules, number: int) -> str:
    if number in rules.peak_months:
        return f"{MONTH_NAMES[number - 1].capitalize()} está entre os meses de maior ocorrência."
    names = ", ".join(MONTH_NAMES[m - 1] for m in sorted(rules.peak_months))
    return f"Os meses de maior ocorrência são {names}."


def class_occurrences(counts: list[int], classes: list[TemperatureClass]) -> list[ClassOccurrence]:
    """The inverse reading over all months: count median and quartiles per temperature class."""
    found = []
    for temperature_class in TEMPERATURE_CLASSES:
        values = sorted(c for c, k in zip(counts, classes, strict=True) if k == temperature_class)
        if not values:
            found.append(ClassOccurrence(temperature_class=temperature_class, months=0))
            continue
        found.append(
            ClassOccurrence(
                temperature_class=temperature_class,
                months=len(values),
                median=float(median(values)),
                low=_quantile(values, 0.25),
                high=_quantile(values, 0.75),
            )
        )
    return found


def _quantile(values: list[int], q: float) -> float:
    """Linear-interpolation quantile of sorted values (numpy's default), without numpy."""
    position = q * (len(values) - 1)
    below = int(position)
    above = min(below + 1, len(values) - 1)
    return float(round(values[below] + (values[above] - values[below]) * (position - below), 1))
