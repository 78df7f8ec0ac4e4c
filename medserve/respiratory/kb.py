"""The respiratory knowledge base: pydantic models of the YAML file, load-time validation, order.

This module is the single source of the triage schema: question ids, Portuguese texts, allowed
answers and each disease's symbolic probabilities all come from the file it loads. The file is
versioned like a model: `KnowledgeBase.sha256` identifies the exact bytes that answered a consult.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from medserve.respiratory.settings import get_triage_settings

Symbolic = Literal["sempre", "alta", "média", "baixa", "nunca"]
SYMBOLIC_ORDER: tuple[Symbolic, ...] = ("sempre", "alta", "média", "baixa", "nunca")

# The chief complaint is the source's "first reported symptom": a question of its own whose answer
# is a symptom id, so a consult's answers are a set and their order cannot matter.
CHIEF_COMPLAINT = "queixa_principal"
CHIEF_COMPLAINT_TEXT = "Qual é o sintoma principal que trouxe o paciente à consulta?"

_ID = r"^[a-z][a-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SymptomSpec(_Strict):
    id: str = Field(pattern=_ID)
    attribute: str = Field(min_length=1)
    value: str = Field(min_length=1)
    question: str = Field(min_length=5)


class FactorSpec(_Strict):
    id: str = Field(pattern=_ID)
    attribute: str = Field(min_length=1)
    question: str = Field(min_length=5)
    values: dict[str, str] = Field(min_length=2, description="value id -> Portuguese label")


class DiseaseSpec(_Strict):
    id: str = Field(pattern=_ID)
    title: str = Field(min_length=2)
    description: str = Field(min_length=10)
    icd10: str = Field(pattern=r"^[A-Z][0-9]{2}(\.[0-9]{1,2})?$")
    prior: Symbolic
    source: str = Field(min_length=10, description="Guideline or textbook chapter, by name.")
    # Lists of one-key mappings, as written in the file: a dict would silently merge a symptom
    # listed twice, and "listed twice as sempre and nunca" is exactly what validation must catch.
    symptoms: list[dict[str, Symbolic]] = Field(min_length=1)
    factors: list[dict[str, dict[str, Symbolic]]] = Field(default_factory=list)

    @field_validator("symptoms", "factors")
    @classmethod
    def _one_key_each(cls, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for entry in entries:
            if len(entry) != 1:
                raise ValueError(f"each entry names exactly one symptom or factor, got {entry}")
        return entries


class Review(_Strict):
    status: Literal["draft", "reviewed"]
    note: str = ""


class KnowledgeBaseFile(_Strict):
    version: str = Field(min_length=1)
    review: Review
    symptoms: list[SymptomSpec] = Field(min_length=1)
    factors: list[FactorSpec] = Field(default_factory=list)
    diseases: list[DiseaseSpec] = Field(min_length=1)


class KnowledgeBaseError(ValueError):
    """The file does not validate; `problems` lists every reason, not just the first."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid respiratory knowledge base: " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, eq=False)  # hashed by identity: consult caches tables per KB
class KnowledgeBase:
    version: str
    sha256: str
    review_status: str
    diseases: tuple[DiseaseSpec, ...]  # alphabetical by title (the source's order)
    symptoms: tuple[SymptomSpec, ...]  # by decreasing number of diseases sharing them
    factors: tuple[FactorSpec, ...]
    disease_symptoms: dict[str, dict[str, Symbolic]]
    disease_factors: dict[str, dict[str, dict[str, Symbolic]]]
    # Pairs with the same symptom profile: only relevant factors (or nothing) separate them.
    symptom_twins: tuple[tuple[str, str], ...]

    def disease(self, disease_id: str) -> DiseaseSpec:
        return self._diseases_by_id[disease_id]

    # Cached: a consult step reads these dozens of times (the dataclass is immutable).
    @cached_property
    def _diseases_by_id(self) -> dict[str, DiseaseSpec]:
        return {d.id: d for d in self.diseases}

    @cached_property
    def disease_ids(self) -> tuple[str, ...]:
        return tuple(d.id for d in self.diseases)

    @cached_property
    def symptom_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.symptoms)

    @cached_property
    def factor_ids(self) -> tuple[str, ...]:
        return tuple(f.id for f in self.factors)

    @cached_property
    def question_ids(self) -> frozenset[str]:
        """Every question a consult may answer: the chief complaint, symptoms, factors."""
        return frozenset({CHIEF_COMPLAINT, *self.symptom_ids, *self.factor_ids})


def _title_key(title: str) -> str:
    # Alphabetical as a Portuguese reader expects: accents do not move "Exacerbação" after "Ex...z".
    plain = unicodedata.normalize("NFKD", title)
    return "".join(c for c in plain if not unicodedata.combining(c)).casefold()


def _check_ids(kb: KnowledgeBaseFile) -> list[str]:
    counts = Counter([s.id for s in kb.symptoms] + [f.id for f in kb.factors] + [CHIEF_COMPLAINT])
    problems = [f"question id {i!r} is defined {n} times" for i, n in counts.items() if n > 1]
    disease_ids = Counter(d.id for d in kb.diseases)
    problems += [f"disease id {i!r} is defined {n} times" for i, n in disease_ids.items() if n > 1]
    return problems


def _disease_symptoms(kb: KnowledgeBaseFile, problems: list[str]) -> dict[str, dict[str, Symbolic]]:
    known = {s.id for s in kb.symptoms}
    table: dict[str, dict[str, Symbolic]] = {}
    for disease in kb.diseases:
        seen: dict[str, Symbolic] = {}
        for entry in disease.symptoms:
            ((symptom, prob),) = entry.items()
            if symptom not in known:
                problems.append(f"{disease.id}: unknown symptom {symptom!r}")
            elif symptom in seen and {seen[symptom], prob} == {"sempre", "nunca"}:
                problems.append(f"{disease.id}: symptom {symptom!r} is both sempre and nunca")
            elif symptom in seen:
                problems.append(f"{disease.id}: symptom {symptom!r} is listed twice")
            seen.setdefault(symptom, prob)
        table[disease.id] = seen
    return table


def _disease_factors(
    kb: KnowledgeBaseFile, problems: list[str]
) -> dict[str, dict[str, dict[str, Symbolic]]]:
    factors = {f.id: f for f in kb.factors}
    table: dict[str, dict[str, dict[str, Symbolic]]] = {}
    for disease in kb.diseases:
        mine: dict[str, dict[str, Symbolic]] = {}
        for entry in disease.factors:
            ((factor_id, values),) = entry.items()
            spec = factors.get(factor_id)
            if spec is None:
                problems.append(f"{disease.id}: unknown factor {factor_id!r}")
                continue
            if factor_id in mine:
                problems.append(f"{disease.id}: factor {factor_id!r} is listed twice")
            problems += [
                f"{disease.id}: factor {factor_id!r} has no value {v!r}"
                for v in values
                if v not in spec.values
            ]
            if set(spec.values) <= {v for v, p in values.items() if p == "nunca"}:
                problems.append(f"{disease.id}: every value of {factor_id!r} is nunca")
            mine[factor_id] = values
        table[disease.id] = mine
    return table


def _check_reachable(
    kb: KnowledgeBaseFile, symptoms: dict[str, dict[str, Symbolic]], problems: list[str]
) -> None:
    # A disease is reached through a chief complaint it can have; a disease whose every symptom is
    # `nunca` could never enter the SCOPE. A symptom no disease has could never matter.
    for disease in kb.diseases:
        if all(p == "nunca" for p in symptoms[disease.id].values()):
            problems.append(f"{disease.id}: unreachable (no symptom other than nunca)")
    used = {s for table in symptoms.values() for s, p in table.items() if p != "nunca"}
    problems += [f"symptom {s.id!r} belongs to no disease" for s in kb.symptoms if s.id not in used]


def _twins(
    kb: KnowledgeBaseFile,
    symptoms: dict[str, dict[str, Symbolic]],
    factors: dict[str, dict[str, dict[str, Symbolic]]],
    problems: list[str],
) -> tuple[tuple[str, str], ...]:
    twins: list[tuple[str, str]] = []
    ids = sorted(d.id for d in kb.diseases)
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            if symptoms[a] != symptoms[b]:
                continue
            if factors[a] == factors[b]:
                problems.append(f"{a} and {b} are indistinguishable (same symptoms and factors)")
            else:
                twins.append((a, b))
    return tuple(twins)


def _ordered_symptoms(
    kb: KnowledgeBaseFile, symptoms: dict[str, dict[str, Symbolic]]
) -> tuple[SymptomSpec, ...]:
    share = Counter(s for table in symptoms.values() for s, p in table.items() if p != "nunca")
    # sorted() is stable, so the file's order breaks ties, as the source's insertion order did.
    return tuple(sorted(kb.symptoms, key=lambda s: -share[s.id]))


def parse_kb(data: Any, raw: bytes) -> KnowledgeBase:
    """Validate already-parsed YAML; `raw` are the file's bytes (hashed for the version)."""
    try:
        file = KnowledgeBaseFile.model_validate(data)
    except ValidationError as exc:
        raise KnowledgeBaseError(
            [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        ) from exc
    problems = _check_ids(file)
    symptoms = _disease_symptoms(file, problems)
    factors = _disease_factors(file, problems)
    _check_reachable(file, symptoms, problems)
    twins = _twins(file, symptoms, factors, problems)
    if problems:
        raise KnowledgeBaseError(problems)
    return KnowledgeBase(
        version=file.version,
        sha256=hashlib.sha256(raw).hexdigest(),
        review_status=file.review.status,
        diseases=tuple(sorted(file.diseases, key=lambda d: _title_key(d.title))),
        symptoms=_ordered_symptoms(file, symptoms),
        factors=tuple(file.factors),
        disease_symptoms=symptoms,
        disease_factors=factors,
        symptom_twins=twins,
    )


def load_kb(path: Path) -> KnowledgeBase:
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise KnowledgeBaseError([f"{path.name} is not YAML: {exc}"]) from exc
    return parse_kb(data, raw)


@lru_cache
def get_kb() -> KnowledgeBase:
    """The configured knowledge base, loaded and validated once per process."""
    return load_kb(get_triage_settings().kb_path)
