"""The consult step as medserve/respiratory/consult.py computed it before its explanation tables
(commit 71e9741): the oracle tests/test_respiratory_consult.py holds the served step to, so that
making the step cheaper can never change an answer. Do not optimise this file.
"""

from __future__ import annotations

import numpy as np

from medserve.respiratory.consult import (
    NEUTRAL,
    ORDINAL,
    SYMPTOM_ANSWERS,
    UNKNOWN,
    Effect,
    Facts,
    Json,
    QuestionKind,
    StepResult,
    _Tables,
    _tables_for,
)
from medserve.respiratory.kb import (
    CHIEF_COMPLAINT,
    CHIEF_COMPLAINT_TEXT,
    KnowledgeBase,
    Symbolic,
)
from medserve.respiratory.settings import StrategyName, TriageSettings


def step(
    kb: KnowledgeBase, facts: Facts | None, strategy: StrategyName, settings: TriageSettings
) -> StepResult:
    """One step on answers already checked by `read_answers` (None: nothing answered yet), as
    the `ConsultResult` JSON (a fresh dict: the caller may add to it)."""
    if facts is None:
        return _result(
            kb, strategy, _chief_complaint_question(kb), [], [d.id for d in kb.diseases], []
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
    """A `Question` as JSON."""
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


def contradictions(kb: KnowledgeBase, disease: str, facts: Facts) -> list[Json]:
    """Answers the KB says this disease cannot give: sempre->no, nunca->yes, factor value nunca
    (as `Evidence` JSON)."""
    found: list[Json] = []
    table = kb.disease_symptoms[disease]
    for symptom, answer in facts.sorted_symptoms:
        prob = table.get(symptom)
        if (prob == "sempre" and answer == "no") or (prob == "nunca" and answer == "yes"):
            found.append(_evidence(symptom, answer, prob, "excluded"))
    factors = kb.disease_factors[disease]
    for factor, value in facts.sorted_factors:
        prob = factors.get(factor, {}).get(value)
        if prob == "nunca":
            found.append(_evidence(factor, value, prob, "excluded"))
    return found


def _why(kb: KnowledgeBase, disease: str, facts: Facts) -> list[Json]:
    """Answers that moved this disease up (supports) or down (against); neutral ones omitted."""
    why: list[Json] = []
    table = kb.disease_symptoms[disease]
    for symptom, answer in facts.sorted_symptoms:
        if answer == UNKNOWN:
            continue
        prob = table.get(symptom)
        points = _symptom_points(prob, answer)
        if points != NEUTRAL:
            why.append(
                _evidence(symptom, answer, prob, "supports" if points > NEUTRAL else "against")
            )
    factors = kb.disease_factors[disease]
    for factor, value in facts.sorted_factors:
        if value == UNKNOWN:
            continue
        prob = factors.get(factor, {}).get(value)
        points = _factor_points(prob)
        if points != NEUTRAL:
            why.append(
                _evidence(factor, value, prob, "supports" if points > NEUTRAL else "against")
            )
    return why


def _diagnosis(kb: KnowledgeBase, disease: str, score: float, facts: Facts) -> Json:
    """A `Diagnosis` as JSON; `climate` is filled in by the served model."""
    spec = kb.disease(disease)
    return {
        "disease": disease,
        "icd10": spec.icd10,
        "title": spec.title,
        "score": round(min(max(score, 0.0), 1.0), 6),
        "why": _why(kb, disease, facts),
        "climate": None,
    }


# --- the source's hypothesis-test cycle --------------------------------------------------------


def _source_exclusion(kb: KnowledgeBase, disease: str, facts: Facts) -> list[Json]:
    table = kb.disease_symptoms[disease]
    outside_scope = [
        _evidence(s, "yes", None, "excluded")
        for s, a in facts.sorted_symptoms
        if a == "yes" and s not in table
    ]
    return outside_scope + contradictions(kb, disease, facts)


def _has(kb: KnowledgeBase, disease: str, symptom: str) -> bool:
    return kb.disease_symptoms[disease].get(symptom, "nunca") != "nunca"


def _source_next(kb: KnowledgeBase, facts: Facts, focus: list[str]) -> str | None:
    asked = facts.asked
    best, best_count = None, 0
    for symptom in kb.symptom_ids:  # KB order: the first of equal counts wins
        count = sum(_has(kb, d, symptom) for d in focus) if symptom not in asked else 0
        if count > best_count:
            best, best_count = symptom, count
    if best is not None:
        return best
    return next(
        (
            f
            for f in kb.factor_ids
            if f not in asked and any(f in kb.disease_factors[d] for d in focus)
        ),
        None,
    )


def _source_score(kb: KnowledgeBase, disease: str, facts: Facts) -> float:
    points = ORDINAL[kb.disease(disease).prior]
    items = 1
    for symptom, answer in facts.symptoms.items():
        if answer != UNKNOWN:
            points += _symptom_points(kb.disease_symptoms[disease].get(symptom), answer)
            items += 1
    for factor, value in facts.factors.items():
        if value != UNKNOWN:
            points += _factor_points(kb.disease_factors[disease].get(factor, {}).get(value))
            items += 1
    return points / (ORDINAL["sempre"] * items)


def _source_step(kb: KnowledgeBase, facts: Facts, settings: TriageSettings) -> StepResult:
    excluded: list[Json] = []
    focus: list[str] = []
    for disease in kb.diseases:  # alphabetical, so focus and excluded lists are too
        reasons = _source_exclusion(kb, disease.id, facts)
        if reasons:
            excluded.append(_excluded(disease.id, reasons))
        else:
            focus.append(disease.id)
    following = _source_next(kb, facts, focus)
    if following is not None:
        return _result(kb, "source", question_for(kb, following), [], focus, excluded)
    scored = sorted(
        ((_source_score(kb, d, facts), i, d) for i, d in enumerate(focus)),
        key=lambda t: (-t[0], t[1]),
    )
    diagnoses = [_diagnosis(kb, d, s, facts) for s, _, d in scored[: settings.max_diagnoses]]
    return _result(kb, "source", None, diagnoses, focus, excluded)


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
    kb: KnowledgeBase,
    facts: Facts,
    post: np.ndarray,
    in_focus: np.ndarray,
    settings: TriageSettings,
) -> str | None:
    if post.max() >= settings.stop_probability:
        return None
    tables = _tables_for(kb, settings)
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
    ids = kb.disease_ids
    # The top disease always stays in focus, so the focus is never empty.
    in_focus = (post >= settings.focus_floor) | (post == post.max())
    # A contradiction is reported as an exclusion only once the evidence as a whole agrees.
    contradicted = tables.contradicts[rows].any(axis=0) & ~in_focus
    excluded = [
        _excluded(ids[i], contradictions(kb, ids[i], facts))
        for i in np.flatnonzero(contradicted).tolist()
    ]
    focus = [ids[i] for i in np.flatnonzero(in_focus).tolist()]
    following = _info_gain_next(kb, facts, post, in_focus, settings)
    if following is not None:
        return _result(kb, "info_gain", question_for(kb, following), [], focus, excluded)
    order = np.argsort(-post, kind="stable")[: settings.max_diagnoses].tolist()
    diagnoses = [_diagnosis(kb, ids[i], float(post[i]), facts) for i in order]
    return _result(kb, "info_gain", None, diagnoses, focus, excluded)
