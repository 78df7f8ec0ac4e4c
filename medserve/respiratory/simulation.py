"""Simulated patients drawn from the knowledge base, and a consult run to its end for each.

Patients are drawn from the KB itself (disease by its prior, each symptom by its symbolic
probability, each factor value by its weight), then answers get noise (a flipped yes/no) and
"unknown"s. Used by `bench/respiratory_strategies.py` to compare the strategies and by the KB's
publication (`training/respiratory_triage.py`) to build the drift reference of its final answers.
It measures how well a strategy uses the KB, not clinical accuracy: no real patient is involved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medserve.respiratory.consult import Answer, ConsultResult, consult
from medserve.respiratory.kb import CHIEF_COMPLAINT, KnowledgeBase
from medserve.respiratory.settings import StrategyName, TriageSettings

# The simulated world's reading of the symbols. Fixed, and distinct from the strategy's tunable
# reading, so tuning cannot simply copy the generator.
WORLD = {"sempre": 0.97, "alta": 0.75, "média": 0.5, "baixa": 0.2, "nunca": 0.02}
WORLD_UNLISTED = 0.03  # a symptom the KB does not list for the disease, present anyway
FLIP = 0.05  # the patient (or the clerk) gives the wrong yes/no
UNKNOWN_RATE = 0.10  # "não sei"


@dataclass(frozen=True)
class Patient:
    disease: str
    answers: dict[str, str]  # every question id -> the answer this patient would give
    chief: str


def _symptom_answer(rng: np.random.Generator, p_yes: float) -> str:
    if rng.random() < UNKNOWN_RATE:
        return "unknown"
    present = rng.random() < p_yes
    if rng.random() < FLIP:
        present = not present
    return "yes" if present else "no"


def draw_patient(kb: KnowledgeBase, rng: np.random.Generator) -> Patient:
    prior = np.array([WORLD[d.prior] for d in kb.diseases])
    disease = kb.diseases[rng.choice(len(prior), p=prior / prior.sum())].id
    while True:
        table = kb.disease_symptoms[disease]
        truth = {
            s: rng.random() < WORLD.get(table.get(s, ""), WORLD_UNLISTED) for s in kb.symptom_ids
        }
        present = [s for s, yes in truth.items() if yes]
        if present:  # a patient comes with at least one complaint
            break
    # The chief complaint is a real symptom (no noise): it is why the patient came.
    chief = present[rng.integers(len(present))]
    answers = {}
    for s, yes in truth.items():
        answers[s] = _symptom_answer(rng, 1.0 if yes else 0.0)
    for factor in kb.factors:
        values = list(factor.values)
        listed = kb.disease_factors[disease].get(factor.id, {})
        weights = np.array([WORLD[listed.get(v, "média")] for v in values])
        value = values[rng.choice(len(values), p=weights / weights.sum())]
        answers[factor.id] = "unknown" if rng.random() < UNKNOWN_RATE else value
    return Patient(disease=disease, answers=answers, chief=chief)


def final_result(
    patient: Patient, strategy: StrategyName, settings: TriageSettings, kb: KnowledgeBase
) -> tuple[ConsultResult, int]:
    """The consult's final answer for this patient and the number of answers it took."""
    answers = [Answer(question=CHIEF_COMPLAINT, answer=patient.chief)]
    while True:
        result = consult(answers, strategy, kb=kb, settings=settings)
        if result.question is None:
            return result, len(answers)
        question = result.question.id
        answers.append(Answer(question=question, answer=patient.answers[question]))


def run_consult(
    patient: Patient, strategy: StrategyName, settings: TriageSettings, kb: KnowledgeBase
) -> tuple[list[str], int]:
    """The ranked disease ids of the final answer and the number of answers it took."""
    result, asked = final_result(patient, strategy, settings, kb)
    return [d.disease for d in result.diagnoses], asked
