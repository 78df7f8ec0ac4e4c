"""The KB review report: what confirmed consults say about the knowledge base.

    medserve triage report [--since 30d] [--json]

For each disease: how many consults ranked it first, how many of those a clinician confirmed
(and how many confirmed another disease), and which symptoms the confirmed patients answered
against the KB: "no" where the KB says `sempre` or `alta`, "yes" where it says `nunca` or `baixa`
or does not list the symptom. Read from the prediction log (consults' answers and diagnoses), the
feedback table (the confirmed disease) and the KB tables of each consult's KB version.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.engine import Engine

from medserve.prediction_log import FeedbackRow, PredictionRow
from medserve.respiratory.kb_tables import stored_symptoms
from medserve.respiratory.model import MODEL_NAME

EXPECTED_YES = frozenset({"sempre", "alta"})
EXPECTED_NO = frozenset({"nunca", "baixa"})


class SymptomDisagreement(BaseModel):
    symptom: str
    kb_probability: str | None  # None: the KB does not list it for the disease
    answered: str  # yes | no
    patients: int


class DiseaseReview(BaseModel):
    disease: str
    ranked_first: int = 0
    confirmed_when_first: int = 0
    other_confirmed_when_first: int = 0
    confirmed_total: int = 0
    disagreements: list[SymptomDisagreement] = Field(default_factory=list)

    @property
    def confirmed_share(self) -> float | None:
        reviewed = self.confirmed_when_first + self.other_confirmed_when_first
        return self.confirmed_when_first / reviewed if reviewed else None


class TriageReport(BaseModel):
    consults: int
    confirmed: int
    diseases: list[DiseaseReview]


def _disagrees(probability: str | None, answer: str) -> bool:
    if answer == "no":
        return probability in EXPECTED_YES
    if answer == "yes":
        return probability is None or probability in EXPECTED_NO
    return False


def build_report(engine: Engine, since: datetime | None = None) -> TriageReport:
    query = (
        select(
            PredictionRow.model_tag,
            PredictionRow.inputs,
            PredictionRow.outputs,
            FeedbackRow.outcome,
        )
        .outerjoin(FeedbackRow, FeedbackRow.prediction_id == PredictionRow.id)
        .where(PredictionRow.model == MODEL_NAME)
    )
    if since is not None:
        query = query.where(PredictionRow.created_at >= since)
    reviews: dict[str, DiseaseReview] = {}
    disagreements: dict[str, Counter[tuple[str, str | None, str]]] = defaultdict(Counter)
    tables: dict[str, dict[str, dict[str, str]]] = {}
    consults = confirmed = 0
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    for _tag, inputs, outputs, outcome in rows:
        consult = outputs.get("consult", {})
        diagnoses = consult.get("diagnoses") or []
        if not diagnoses:
            continue
        consults += 1
        first = diagnoses[0]["disease"]
        review = reviews.setdefault(first, DiseaseReview(disease=first))
        review.ranked_first += 1
        label = (outcome or {}).get("label")
        if not isinstance(label, str):
            continue
        confirmed += 1
        if label == first:
            review.confirmed_when_first += 1
        else:
            review.other_confirmed_when_first += 1
        reviews.setdefault(label, DiseaseReview(disease=label)).confirmed_total += 1
        version = consult.get("kb_version", "")
        if version not in tables:
            tables[version] = stored_symptoms(engine, version)
        kb_table = tables[version].get(label, {})
        for answer in inputs.get("answers", []):
            question, value = answer["question"], answer["answer"]
            if value in ("yes", "no") and _disagrees(kb_table.get(question), value):
                disagreements[label][(question, kb_table.get(question), value)] += 1
    for disease, counts in disagreements.items():
        reviews[disease].disagreements = [
            SymptomDisagreement(symptom=s, kb_probability=p, answered=a, patients=n)
            for (s, p, a), n in counts.most_common()
        ]
    return TriageReport(
        consults=consults,
        confirmed=confirmed,
        diseases=sorted(reviews.values(), key=lambda r: (-r.ranked_first, r.disease)),
    )


def report_table(report: TriageReport) -> str:
    """The report as a markdown table (what the CLI prints)."""
    lines = [
        f"{report.consults} consults ended, {report.confirmed} confirmed by a clinician.",
        "",
        "| disease | ranked first | confirmed when first | another confirmed | "
        "symptoms answered against the KB (confirmed patients) |",
        "|---|---|---|---|---|",
    ]
    for review in report.diseases:
        against = ", ".join(
            f"{d.symptom}={d.answered} (KB {d.kb_probability or 'não listado'}) x{d.patients}"
            for d in review.disagreements[:5]
        )
        lines.append(
            f"| {review.disease} | {review.ranked_first} | {review.confirmed_when_first} | "
            f"{review.other_confirmed_when_first} | {against or '-'} |"
        )
    return "\n".join(lines)
