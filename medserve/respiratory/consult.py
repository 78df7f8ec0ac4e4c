"""One stateless consult step: the whole answer list in, the next question or the diagnoses out.

Two strategies share the answer checks and the output shape:
- `source`: the source system's hypothesis-test cycle (MANIFS, SCOPE, FOCUS; most-shared symptom
  next; then relevant factors; then rank FOCUS by the symbolic probabilities). Hard exclusions.
- `info_gain`: the question with the highest expected information gain over the focus, on a
  numeric reading of the symbolic probabilities (settings), stopping once the top posterior is
  high enough. Soft: a contradiction makes a disease unlikely, never impossible.
docs/respiratory.md gives the exact semantics and the reasons for them.

A step's answer is built as plain JSON-ready dicts (`StepResult`), not as the pydantic models
below: the models are the declared wire schema (`/openapi.json`, `consult()`'s return type),
and building ~35 validated models per final step cost about a third of the step. The dicts
have the models' fields in the models' order; tests/test_respiratory_consult.py checks that
every step's dict is exactly what validating and dumping it as `ConsultResult` gives.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from medserve.respiratory.kb import (
    CHIEF_COMPLAINT,
    CHIEF_COMPLAINT_TEXT,
    KnowledgeBase,
    Symbolic,
    get_kb,
)
from medserve.respiratory.settings import StrategyName, TriageSettings, get_triage_settings

SYMPTOM_ANSWERS = ("yes", "no", "unknown")
UNKNOWN = "unknown"
# Ordinal reading used by the source strategy's ranking: only the order of the five symbols
# matters there, so equal steps (and 2 = média = "no information") keep it free of tuning.
ORDINAL: dict[Symbolic, int] = {"sempre": 4, "alta": 3, "média": 2, "baixa": 1, "nunca": 0}
NEUTRAL = ORDINAL["média"]

ErrorCode = Literal[
    "unknown_question",
    "duplicated_answer",
    "contradictory_answer",
    "answer_not_allowed",
    "first_symptom_unknown",
    "chief_complaint_missing",
]


class ConsultError(ValueError):
    """A refused answer list; the HTTP layer maps every code to 422."""

    def __init__(self, code: ErrorCode, message: str, question: str | None = None) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.question = question


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    question: str = Field(min_length=1, max_length=64)
    answer: str = Field(min_length=1, max_length=64)


QuestionKind = Literal["chief_complaint", "symptom", "factor"]


class Question(BaseModel):
    id: str
    text: str
    kind: QuestionKind
    allowed_answers: list[str]
    answer_labels: dict[str, str]


Effect = Literal["supports", "against", "excluded"]


class Evidence(BaseModel):
    question: str
    answer: str
    kb_probability: Symbolic | None  # None: the disease does not list this symptom/value
    effect: Effect


class Diagnosis(BaseModel):
    disease: str
    icd10: str
    title: str
    score: float = Field(ge=0, le=1)
    why: list[Evidence]
    climate: str | None = Field(
        default=None,
        description="What the climate-occurrence rules say of this ICD code and the month's "
        "temperature (served answers only; the rules are a separate stored model).",
    )


class Excluded(BaseModel):
    disease: str
    why: list[Evidence]


class ConsultResult(BaseModel):
    status: Literal["question", "diagnosis"]
    strategy: StrategyName
    question: Question | None
    diagnoses: list[Diagnosis]
    focus: list[str]
    excluded: list[Excluded]
    kb_version: str
    kb_sha256: str


# One step's answer: the `ConsultResult` fields as JSON-ready dicts and lists (module docstring).
StepResult = dict[str, Any]
Json = dict[str, Any]


@dataclass(frozen=True)
class Facts:
    """The answer list as a set: order of arrival cannot change the result."""

    symptoms: dict[str, str]  # symptom id -> yes | no | unknown (chief complaint included)
    factors: dict[str, str]  # factor id -> value id | unknown

    @property
    def asked(self) -> set[str]:
        return {CHIEF_COMPLAINT} | set(self.symptoms) | set(self.factors)

    # Sorted once per step, not once per disease explained: the answers are a set, and their
    # order of arrival must not show in the result.
    @cached_property
    def sorted_symptoms(self) -> list[tuple[str, str]]:
        return sorted(self.symptoms.items())

    @cached_property
    def sorted_factors(self) -> list[tuple[str, str]]:
        return sorted(self.factors.items())

    @cached_property
    def sorted_pairs(self) -> list[tuple[str, str]]:
        """Every (question, answer): symptoms then factors, each sorted (how evidence lists)."""
        return self.sorted_symptoms + self.sorted_factors


def allowed_answers(kb: KnowledgeBase, question: str) -> tuple[str, ...]:
    if question == CHIEF_COMPLAINT:
        return kb.symptom_ids
    if question in kb.symptom_ids:
        return SYMPTOM_ANSWERS
    factor = next(f for f in kb.factors if f.id == question)
    return (*factor.values, UNKNOWN)


def _check_one(kb: KnowledgeBase, answer: Answer) -> None:
    if answer.question not in kb.question_ids:
        raise ConsultError("unknown_question", "unknown question id", answer.question)
    if answer.question == CHIEF_COMPLAINT and answer.answer not in kb.symptom_ids:
        raise ConsultError(
            "first_symptom_unknown",
            "no disease of the knowledge base has this symptom",
            CHIEF_COMPLAINT,
        )
    if answer.question == CHIEF_COMPLAINT:
        return
    allowed = allowed_answers(kb, answer.question)
    if answer.answer not in allowed:
        raise ConsultError(
            "answer_not_allowed", f"allowed answers: {', '.join(allowed)}", answer.question
        )


def read_answers(kb: KnowledgeBase, answers: Sequence[Answer]) -> Facts | None:
    """Check every answer; None for an empty list (the consult has not started)."""
    given: dict[str, str] = {}
    for answer in answers:
        _check_one(kb, answer)
        previous = given.get(answer.question)
        if previous is not None:
            code: ErrorCode = (
                "duplicated_answer" if previous == answer.answer else "contradictory_answer"
            )
            raise ConsultError(code, "question answered twice", answer.question)
        given[answer.question] = answer.answer
    if not given:
        return None
    chief = given.pop(CHIEF_COMPLAINT, None)
    if chief is None:
        raise ConsultError(
            "chief_complaint_missing", "answer the chief complaint first", CHIEF_COMPLAINT
        )
    if chief in given:
        # The chief complaint says "yes" to its symptom: another answer repeats or denies it.
        code = "duplicated_answer" if given[chief] == "yes" else "contradictory_answer"
        raise ConsultError(code, "the chief complaint already answers this symptom", chief)
    symptoms = {q: a for q, a in given.items() if q in kb.symptom_ids}
    symptoms[chief] = "yes"
    factors = {q: a for q, a in given.items() if q in kb.factor_ids}
    return Facts(symptoms=symptoms, factors=factors)


def consult(
    answers: Sequence[Answer],
    strategy: StrategyName | None = None,
    kb: KnowledgeBase | None = None,
    settings: TriageSettings | None = None,
) -> ConsultResult:
    """One consult step as the declared model. Raises ConsultError for an answer list it
    refuses."""
    kb = kb or get_kb()
    settings = settings or get_triage_settings()
    facts = read_answers(kb, answers)
    return ConsultResult.model_validate(
        step(kb, facts, strategy or settings.default_strategy, settings)
    )


def step(
    kb: KnowledgeBase, facts: Facts | None, strategy: StrategyName, settings: TriageSettings
) -> StepResult:
    """One step on answers already checked by `read_answers` (None: nothing answered yet), as
    the `ConsultResult` JSON (a fresh dict: the caller may add to it)."""
    if facts is None:
        return _result(
            kb, strategy, question_for(kb, CHIEF_COMPLAINT), [], list(kb.disease_ids), []
        )
    if strategy == "source":
        return _source_step(kb, facts, settings)
    return _info_gain_step(kb, facts, settings)


def _chief_complaint_question(kb: KnowledgeBase) -> Json:
    return _question(
        CHIEF_COMPLAINT,
        CHIEF_COMPLAINT_TEXT,
        "chief_complaint",
        list(kb.symptom_ids),
        {s.id: f"{s.attribute}: {s.value}" for s in kb.symptoms},
    )


def question_for(kb: KnowledgeBase, question_id: str) -> Json:
    """A `Question` as JSON (shared, read only: `_Explanations`)."""
    return _explanations_for(kb).questions[question_id]


def _build_question(kb: KnowledgeBase, question_id: str) -> Json:
    if question_id == CHIEF_COMPLAINT:
        return _chief_complaint_question(kb)
    symptom = next((s for s in kb.symptoms if s.id == question_id), None)
    if symptom is not None:
        labels = {"yes": "sim", "no": "não", "unknown": "não sei"}
        return _question(symptom.id, symptom.question, "symptom", list(SYMPTOM_ANSWERS), labels)
    factor = next(f for f in kb.factors if f.id == question_id)
    labels = {**factor.values, UNKNOWN: "não sei"}
    return _question(factor.id, factor.question, "factor", [*factor.values, UNKNOWN], labels)


def _question(
    question_id: str, text: str, kind: QuestionKind, allowed: list[str], labels: dict[str, str]
) -> Json:
    return {
        "id": question_id,
        "text": text,
        "kind": kind,
        "allowed_answers": allowed,
        "answer_labels": labels,
    }


def _result(
    kb: KnowledgeBase,
    strategy: StrategyName,
    question: Json | None,
    diagnoses: list[Json],
    focus: list[str],
    excluded: list[Json],
) -> StepResult:
    return {
        "status": "question" if question else "diagnosis",
        "strategy": strategy,
        "question": question,
        "diagnoses": diagnoses,
        "focus": focus,
        "excluded": excluded,
        "kb_version": kb.version,
        "kb_sha256": kb.sha256,
    }


def _evidence(question: str, answer: str, prob: Symbolic | None, effect: Effect) -> Json:
    """An `Evidence` as JSON."""
    return {"question": question, "answer": answer, "kb_probability": prob, "effect": effect}


def _excluded(disease: str, why: list[Json]) -> Json:
    """An `Excluded` as JSON."""
    return {"disease": disease, "why": why}


# --- evidence shared by both strategies -------------------------------------------------------


def _symptom_points(prob: Symbolic | None, answer: str) -> int:
    # An unlisted symptom reads as `nunca` (the source's closed world: SCOPE holds only the
    # diseases that have every reported symptom).
    level = ORDINAL[prob or "nunca"]
    return level if answer == "yes" else ORDINAL["sempre"] - level


def _factor_points(prob: Symbolic | None) -> int:
    # An unlisted factor value says nothing about the disease (a disease lists the months it is
    # common in; the others are not "never").
    return NEUTRAL if prob is None else ORDINAL[prob]


Pair = tuple[str, str]  # (question id, answer)


@dataclass(frozen=True)
class _DiseaseEvidence:
    """What each possible answer says of one disease, looked up instead of worked out per step.

    Only answers that carry evidence have an entry ("unknown" never does). The `Evidence` dicts
    are shared by every answer that cites them: read only (answers are serialised as they are;
    `consult()` returns validated copies)."""

    why: dict[Pair, Json]  # supports / against; neutral answers omitted
    contradictions: dict[Pair, Json]  # sempre->no, nunca->yes, a factor value `nunca`
    outside_scope: dict[Pair, Json]  # "yes" to a symptom it does not list (the source's SCOPE)
    points: dict[Pair, int]  # the source's ordinal points of every known answer
    prior_points: int


@dataclass(frozen=True)
class _Explanations:
    """Per KB: every disease's `_DiseaseEvidence`, every question's JSON, and the bitmasks (bit i:
    the KB's i-th disease) the source's next-question rule counts with."""

    diseases: dict[str, _DiseaseEvidence]
    questions: dict[str, Json]
    has_symptom: dict[str, int]  # listed as anything but `nunca`
    lists_factor: dict[str, int]


def _disease_evidence(kb: KnowledgeBase, disease: str) -> _DiseaseEvidence:
    table = kb.disease_symptoms[disease]
    why: dict[Pair, Json] = {}
    contradicts: dict[Pair, Json] = {}
    points: dict[Pair, int] = {}
    for symptom in kb.symptom_ids:
        prob = table.get(symptom)
        for answer in ("yes", "no"):
            pair = (symptom, answer)
            points[pair] = _symptom_points(prob, answer)
            if points[pair] != NEUTRAL:
                effect: Effect = "supports" if points[pair] > NEUTRAL else "against"
                why[pair] = _evidence(symptom, answer, prob, effect)
            if (prob == "sempre" and answer == "no") or (prob == "nunca" and answer == "yes"):
                contradicts[pair] = _evidence(symptom, answer, prob, "excluded")
    factors = kb.disease_factors[disease]
    for factor in kb.factors:
        for value in factor.values:
            pair = (factor.id, value)
            prob = factors.get(factor.id, {}).get(value)
            points[pair] = _factor_points(prob)
            if points[pair] != NEUTRAL:
                effect = "supports" if points[pair] > NEUTRAL else "against"
                why[pair] = _evidence(factor.id, value, prob, effect)
            if prob == "nunca":
                contradicts[pair] = _evidence(factor.id, value, prob, "excluded")
    outside = {
        (s, "yes"): _evidence(s, "yes", None, "excluded") for s in kb.symptom_ids if s not in table
    }
    return _DiseaseEvidence(why, contradicts, outside, points, ORDINAL[kb.disease(disease).prior])


def _mask(kb: KnowledgeBase, diseases: Iterable[str]) -> int:
    index = {d: i for i, d in enumerate(kb.disease_ids)}
    return sum(1 << index[d] for d in set(diseases))


def _build_explanations(kb: KnowledgeBase) -> _Explanations:
    ids = kb.disease_ids
    return _Explanations(
        diseases={d: _disease_evidence(kb, d) for d in ids},
        questions={q: _build_question(kb, q) for q in (CHIEF_COMPLAINT, *kb.question_ids)},
        has_symptom={
            s: _mask(kb, (d for d in ids if kb.disease_symptoms[d].get(s, "nunca") != "nunca"))
            for s in kb.symptom_ids
        },
        lists_factor={
            f: _mask(kb, (d for d in ids if f in kb.disease_factors[d])) for f in kb.factor_ids
        },
    )


# Built once per KB (it is immutable): a step only looks up.
_EXPLANATIONS: dict[int, tuple[KnowledgeBase, _Explanations]] = {}


def _explanations_for(kb: KnowledgeBase) -> _Explanations:
    cached = _EXPLANATIONS.get(id(kb))
    if cached is None or cached[0] is not kb:
        if len(_EXPLANATIONS) > 8:
            _EXPLANATIONS.clear()
        cached = _EXPLANATIONS[id(kb)] = (kb, _build_explanations(kb))
    return cached[1]


def _cited(found: dict[Pair, Json], facts: Facts) -> list[Json]:
    """The evidence `found` holds for the answers given: symptoms then factors, each sorted."""
    return [evidence for pair in facts.sorted_pairs if (evidence := found.get(pair)) is not None]


def contradictions(kb: KnowledgeBase, disease: str, facts: Facts) -> list[Json]:
    """Answers the KB says this disease cannot give: sempre->no, nunca->yes, factor value nunca
    (as `Evidence` JSON)."""
    return _cited(_explanations_for(kb).diseases[disease].contradictions, facts)


def _diagnosis(kb: KnowledgeBase, disease: str, score: float, facts: Facts) -> Json:
    """A `Diagnosis` as JSON (a fresh dict: the served model fills in `climate`); `why` lists
    the answers that moved this disease up (supports) or down (against)."""
    spec = kb.disease(disease)
    return {
        "disease": disease,
        "icd10": spec.icd10,
        "title": spec.title,
        "score": round(min(max(score, 0.0), 1.0), 6),
        "why": _cited(_explanations_for(kb).diseases[disease].why, facts),
        "climate": None,
    }


# --- the source's hypothesis-test cycle --------------------------------------------------------


def _source_exclusion(evidence: _DiseaseEvidence, facts: Facts) -> list[Json]:
    return _cited(evidence.outside_scope, facts) + _cited(evidence.contradictions, facts)


def _source_next(
    kb: KnowledgeBase, explained: _Explanations, facts: Facts, focus_mask: int
) -> str | None:
    asked = facts.asked
    best, best_count = None, 0
    for symptom in kb.symptom_ids:  # KB order: the first of equal counts wins
        if symptom in asked:
            continue
        count = (explained.has_symptom[symptom] & focus_mask).bit_count()
        if count > best_count:
            best, best_count = symptom, count
    if best is not None:
        return best
    return next(
        (f for f in kb.factor_ids if f not in asked and explained.lists_factor[f] & focus_mask),
        None,
    )


def _source_score(evidence: _DiseaseEvidence, known: list[Pair]) -> float:
    points = evidence.prior_points + sum(evidence.points[pair] for pair in known)
    return points / (ORDINAL["sempre"] * (len(known) + 1))


def _source_step(kb: KnowledgeBase, facts: Facts, settings: TriageSettings) -> StepResult:
    explained = _explanations_for(kb)
    excluded: list[Json] = []
    focus: list[str] = []
    focus_mask = 0
    for i, disease in enumerate(kb.disease_ids):  # alphabetical: focus and excluded lists too
        reasons = _source_exclusion(explained.diseases[disease], facts)
        if reasons:
            excluded.append(_excluded(disease, reasons))
        else:
            focus.append(disease)
            focus_mask |= 1 << i
    following = _source_next(kb, explained, facts, focus_mask)
    if following is not None:
        return _result(kb, "source", question_for(kb, following), [], focus, excluded)
    known = [pair for pair in facts.sorted_pairs if pair[1] != UNKNOWN]
    scored = sorted(
        ((_source_score(explained.diseases[d], known), i, d) for i, d in enumerate(focus)),
        key=lambda t: (-t[0], t[1]),
    )
    diagnoses = [_diagnosis(kb, d, s, facts) for s, _, d in scored[: settings.max_diagnoses]]
    return _result(kb, "source", None, diagnoses, focus, excluded)


# --- expected information gain -----------------------------------------------------------------


@dataclass(frozen=True)
class _Tables:
    """P(answer | disease) for every question, on one numeric reading; diseases in KB order.

    `answers` stacks every question's answer rows (a symptom: yes, no; a factor: its values), so
    that a step is a few array operations on them: the posterior sums the log rows of the answers
    given, the expected gains of all questions reduce over all rows at once, and `contradicts`
    marks which answers the KB says a disease cannot give.
    """

    prior: np.ndarray  # (D,)
    log_prior: np.ndarray  # (D,): the posterior's starting point, not recomputed per step
    questions: tuple[str, ...]  # symptoms then factors, KB order
    question_index: dict[str, int]
    answers: np.ndarray  # (R, D): every question's answer rows, question after question
    log_answers: np.ndarray  # (R, D)
    log2_answers: np.ndarray  # (R, D)
    starts: np.ndarray  # (Q,): first row of each question in `answers`
    row_of: dict[tuple[str, str], int]  # (question, answer) -> its row
    contradicts: np.ndarray  # (R, D) bool: sempre->no, nunca->yes, a factor value `nunca`
    contradiction_masks: tuple[int, ...]  # (R,): `contradicts` as bitmasks (bit i: disease i)

    def rows(self, facts: Facts) -> list[int]:
        """The rows of the answers given ("unknown" answers carry no evidence), sorted: summed
        in the order given, two diseases with equal evidence could differ in the last bit and
        swap places with the order of the answers (found by the order property test)."""
        row_of = self.row_of
        given = [*facts.symptoms.items(), *facts.factors.items()]
        return sorted(row_of[pair] for pair in given if pair[1] != UNKNOWN)


def _build_tables(kb: KnowledgeBase, reading: dict[str, float], unlisted: float) -> _Tables:
    ids = [d.id for d in kb.diseases]
    prior = np.array([reading[d.prior] for d in kb.diseases])
    blocks: list[np.ndarray] = []
    impossible: list[np.ndarray] = []
    keys: list[tuple[str, str]] = []
    for s in kb.symptom_ids:
        probs = [kb.disease_symptoms[d].get(s) for d in ids]
        p_yes = np.array([reading.get(p or "", unlisted) for p in probs])
        blocks.append(np.stack([p_yes, 1.0 - p_yes]))
        impossible.append(np.array([[p == "nunca" for p in probs], [p == "sempre" for p in probs]]))
        keys += [(s, "yes"), (s, "no")]
    for factor in kb.factors:
        values = tuple(factor.values)
        probs_by_value = [
            [kb.disease_factors[d].get(factor.id, {}).get(v) for d in ids] for v in values
        ]
        # An unlisted value weighs as `média`, the reading of "no information".
        weights = np.array([[reading[p or "média"] for p in row] for row in probs_by_value])
        blocks.append(weights / weights.sum(axis=0, keepdims=True))
        impossible.append(np.array([[p == "nunca" for p in row] for row in probs_by_value]))
        keys += [(factor.id, v) for v in values]
    answers = np.concatenate(blocks)
    contradicts = np.concatenate(impossible)
    questions = (*kb.symptom_ids, *kb.factor_ids)
    prior = prior / prior.sum()
    return _Tables(
        prior=prior,
        log_prior=np.log(prior),
        questions=questions,
        question_index={q: i for i, q in enumerate(questions)},
        answers=answers,
        log_answers=np.log(answers),
        log2_answers=np.log2(answers),
        starts=np.cumsum([0] + [len(block) for block in blocks[:-1]]),
        row_of={key: i for i, key in enumerate(keys)},
        contradicts=contradicts,
        contradiction_masks=tuple(
            sum(1 << i for i in np.flatnonzero(row).tolist()) for row in contradicts
        ),
    )


# Built once per (KB, settings) pair: a step must not rebuild or even hash them.
_TABLES: dict[tuple[int, int], tuple[KnowledgeBase, TriageSettings, _Tables]] = {}


def _tables_for(kb: KnowledgeBase, settings: TriageSettings) -> _Tables:
    key = (id(kb), id(settings))
    cached = _TABLES.get(key)
    if cached is None or cached[0] is not kb or cached[1] is not settings:
        if len(_TABLES) > 8:
            _TABLES.clear()
        cached = (kb, settings, _build_tables(kb, settings.reading(), settings.p_unlisted))
        _TABLES[key] = cached
    return cached[2]


def posterior(kb: KnowledgeBase, facts: Facts, settings: TriageSettings) -> np.ndarray:
    """P(disease | answers) in KB (alphabetical) order; "unknown" answers carry no evidence."""
    tables = _tables_for(kb, settings)
    return _posterior(tables, tables.rows(facts))


def _posterior(tables: _Tables, rows: list[int]) -> np.ndarray:
    log_post = tables.log_prior + tables.log_answers[rows].sum(axis=0)
    post = np.exp(log_post - log_post.max())
    return post / post.sum()


def expected_gains(tables: _Tables, focus_post: np.ndarray) -> np.ndarray:
    """H(focus) - E_answer[H(focus | answer)] of every question (`tables.questions` order), in
    bits, over the renormalised focus. With joint = P(answer, disease):
    E[H(focus | answer)] = sum_answers [P(answer) log2 P(answer) - sum_d joint log2 joint].

    Every P(answer | disease) is > 0, so joint is 0 exactly where the focus is, and
    log2 joint = log2 P(answer | disease) + log2 focus there: no logarithm of the (R, D) matrix
    is taken per step (0 log 0 = 0 by taking 0 for log2 of an empty focus entry)."""
    log_focus = np.log2(focus_post, out=np.zeros_like(focus_post), where=focus_post > 0)
    joint = tables.answers * focus_post  # (R, D)
    p_answer = joint.sum(axis=1)  # > 0: the focus is never empty
    joint_log_joint = (joint * (tables.log2_answers + log_focus)).sum(axis=1)
    per_answer = p_answer * np.log2(p_answer) - joint_log_joint
    after = np.add.reduceat(per_answer, tables.starts)
    before = -(focus_post * log_focus).sum()
    return before - after


def _info_gain_next(
    tables: _Tables, facts: Facts, post: np.ndarray, in_focus: list[bool], settings: TriageSettings
) -> str | None:
    """The question of highest expected gain, or None when none teaches enough (the caller
    has already stopped on a top posterior high enough)."""
    focus_post = np.where(in_focus, post, 0.0)
    focus_post = focus_post / focus_post.sum()
    gains = expected_gains(tables, focus_post)
    index = tables.question_index
    gains[[index[q] for q in facts.asked if q in index]] = -np.inf
    best = float(gains.max())
    if best <= settings.min_gain_bits + 1e-12:
        return None
    # KB order breaks ties (gains equal up to rounding).
    return tables.questions[int(np.flatnonzero(gains >= best - 1e-12)[0])]


def _info_gain_step(kb: KnowledgeBase, facts: Facts, settings: TriageSettings) -> StepResult:
    tables = _tables_for(kb, settings)
    rows = tables.rows(facts)
    post = _posterior(tables, rows)
    # Fifteen numbers: plain Python from here on (each NumPy call on them costs 1-3 us).
    probs = post.tolist()
    top = max(probs)
    ids = kb.disease_ids
    # The top disease always stays in focus, so the focus is never empty.
    floor = settings.focus_floor
    in_focus = [p >= floor or p == top for p in probs]
    # A contradiction is reported as an exclusion only once the evidence as a whole agrees.
    contradicted = 0
    for row in rows:
        contradicted |= tables.contradiction_masks[row]
    excluded = [
        _excluded(ids[i], contradictions(kb, ids[i], facts))
        for i, kept in enumerate(in_focus)
        if not kept and contradicted >> i & 1
    ]
    focus = [ids[i] for i, kept in enumerate(in_focus) if kept]
    if top < settings.stop_probability:
        following = _info_gain_next(tables, facts, post, in_focus, settings)
        if following is not None:
            return _result(kb, "info_gain", question_for(kb, following), [], focus, excluded)
    # Highest first, KB order among equals (a stable sort, as NumPy's stable argsort of -post).
    order = sorted(range(len(probs)), key=probs.__getitem__, reverse=True)
    diagnoses = [_diagnosis(kb, ids[i], probs[i], facts) for i in order[: settings.max_diagnoses]]
    return _result(kb, "info_gain", None, diagnoses, focus, excluded)
