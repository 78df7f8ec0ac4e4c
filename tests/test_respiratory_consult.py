"""Consult steps: refusals, the symbolic semantics, and hypothesis properties of both strategies."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic_core import to_json

from medserve.respiratory.consult import (
    Answer,
    ConsultError,
    ConsultResult,
    consult,
    posterior,
    read_answers,
    step,
)
from medserve.respiratory.kb import CHIEF_COMPLAINT, KnowledgeBase, get_kb
from medserve.respiratory.settings import TriageSettings
from tests import consult_reference

KB = get_kb()
SETTINGS = TriageSettings()
STRATEGIES = ("source", "info_gain")
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(pairs: list[tuple[str, str]], strategy: str = "source") -> ConsultResult:
    answers = [Answer(question=q, answer=a) for q, a in pairs]
    return consult(answers, strategy, kb=KB, settings=SETTINGS)  # type: ignore[arg-type]


def excluded_ids(result: ConsultResult) -> set[str]:
    return {e.disease for e in result.excluded}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_an_empty_consult_asks_the_chief_complaint(strategy: str) -> None:
    result = run([], strategy)
    assert result.status == "question" and result.question is not None
    assert result.question.id == CHIEF_COMPLAINT
    assert result.question.kind == "chief_complaint"
    assert result.question.allowed_answers == list(KB.symptom_ids)
    assert result.kb_version == KB.version and result.kb_sha256 == KB.sha256
    assert result.focus == [d.id for d in KB.diseases] and result.excluded == []


@pytest.mark.parametrize(
    ("pairs", "code", "question"),
    [
        ([("queixa_principal", "tosse"), ("febre_alta", "yes")], "unknown_question", "febre_alta"),
        ([("queixa_principal", "tosse"), ("febre", "talvez")], "answer_not_allowed", "febre"),
        ([("queixa_principal", "tosse"), ("sexo", "yes")], "answer_not_allowed", "sexo"),
        ([("queixa_principal", "unha_encravada")], "first_symptom_unknown", CHIEF_COMPLAINT),
        ([("febre", "yes")], "chief_complaint_missing", CHIEF_COMPLAINT),
        (
            [("queixa_principal", "tosse"), ("febre", "yes"), ("febre", "yes")],
            "duplicated_answer",
            "febre",
        ),
        (
            [("queixa_principal", "tosse"), ("febre", "yes"), ("febre", "no")],
            "contradictory_answer",
            "febre",
        ),
        ([("queixa_principal", "tosse"), ("tosse", "yes")], "duplicated_answer", "tosse"),
        ([("queixa_principal", "tosse"), ("tosse", "no")], "contradictory_answer", "tosse"),
    ],
)
def test_refusals_carry_a_code(pairs: list[tuple[str, str]], code: str, question: str) -> None:
    for strategy in STRATEGIES:
        with pytest.raises(ConsultError) as caught:
            run(pairs, strategy)
        assert (caught.value.code, caught.value.question) == (code, question)


def test_source_sempre_answered_no_excludes_with_the_reason() -> None:
    result = run([("queixa_principal", "dor_garganta"), ("rouquidao", "no")])
    why = {e.disease: e.why for e in result.excluded}["laringite_aguda"]
    assert [(w.question, w.answer, w.kb_probability) for w in why] == [
        ("rouquidao", "no", "sempre")
    ]
    assert "laringite_aguda" not in result.focus


def test_source_nunca_answered_yes_excludes() -> None:
    result = run([("queixa_principal", "espirros"), ("febre", "yes")])
    assert "rinite_alergica" in excluded_ids(result)
    result = run([("queixa_principal", "sibilancia"), ("faixa_etaria", "adulto")])
    assert "bronquiolite" in excluded_ids(result)  # a factor value marked nunca


def test_source_scope_keeps_only_diseases_with_every_reported_symptom() -> None:
    result = run([("queixa_principal", "rouquidao")])
    assert result.focus == ["laringite_aguda"]
    assert {e.why[0].kb_probability for e in result.excluded} == {None}  # not listed = outside


def test_source_asks_the_symptom_shared_by_most_of_the_focus_first() -> None:
    result = run([("queixa_principal", "dispneia")])
    focus = result.focus
    asked = {"dispneia"}
    counts = {
        s: sum(KB.disease_symptoms[d].get(s, "nunca") != "nunca" for d in focus)
        for s in KB.symptom_ids
        if s not in asked
    }
    top = max(counts.values())
    assert result.question is not None
    assert result.question.id == next(s for s in KB.symptom_ids if counts.get(s) == top)


def test_info_gain_never_hard_excludes_on_one_contradiction() -> None:
    # Allergic rhinitis with one "yes" to its nunca symptom (fever): the source's cycle drops it,
    # information gain keeps it first because everything else fits (docs/respiratory.md).
    pairs = [
        ("queixa_principal", "espirros"),
        ("prurido", "yes"),
        ("coriza", "yes"),
        ("obstrucao_nasal", "yes"),
        ("febre", "yes"),
    ]
    assert "rinite_alergica" in excluded_ids(run(pairs, "source"))
    facts = read_answers(KB, [Answer(question=q, answer=a) for q, a in pairs])
    assert facts is not None
    post = posterior(KB, facts, SETTINGS)
    assert [d.id for d in KB.diseases][int(post.argmax())] == "rinite_alergica"
    result = run(pairs, "info_gain")
    assert "rinite_alergica" in result.focus
    assert "rinite_alergica" not in excluded_ids(result)


def test_a_final_diagnosis_explains_itself() -> None:
    pairs = [("queixa_principal", "tosse")]
    truth = {
        s: "yes"
        for s in ("tosse_prolongada", "expectoracao", "fadiga", "sudorese_noturna", "perda_peso")
    }
    result = run(pairs, "info_gain")
    while result.status == "question":
        assert result.question is not None
        q = result.question
        pairs.append((q.id, truth.get(q.id, "no" if q.kind == "symptom" else "unknown")))
        result = run(pairs, "info_gain")
    top = result.diagnoses[0]
    assert (top.disease, top.icd10) == ("tuberculose_pulmonar", "A16.2")
    assert {("tosse_prolongada", "supports")} <= {(w.question, w.effect) for w in top.why}
    scores = [d.score for d in result.diagnoses]
    assert scores == sorted(scores, reverse=True)


# --- properties --------------------------------------------------------------------------------

QUESTIONS = (*KB.symptom_ids, *KB.factor_ids)


@st.composite
def consistent_with_one(draw: st.DrawFn, kb: KnowledgeBase = KB) -> tuple[str, list[Answer]]:
    """Answers a patient of one disease can give without contradicting its KB entry."""
    target = draw(st.sampled_from([d.id for d in kb.diseases]))
    table = kb.disease_symptoms[target]
    sempre = [s for s in kb.symptom_ids if table.get(s) == "sempre"]
    possible = [s for s in kb.symptom_ids if table.get(s, "nunca") != "nunca"]
    chief = draw(st.sampled_from(sempre or possible))
    answers = [Answer(question=CHIEF_COMPLAINT, answer=chief)]
    for symptom in draw(st.lists(st.sampled_from(kb.symptom_ids), unique=True)):
        if symptom == chief:
            continue
        prob = table.get(symptom, "nunca")
        choices = {"sempre": ["yes", "unknown"], "nunca": ["no", "unknown"]}.get(
            prob, ["yes", "no", "unknown"]
        )
        answers.append(Answer(question=symptom, answer=draw(st.sampled_from(choices))))
    for factor_id in draw(st.lists(st.sampled_from(kb.factor_ids), unique=True)):
        factor = next(f for f in kb.factors if f.id == factor_id)
        listed = kb.disease_factors[target].get(factor.id, {})
        values = [v for v in factor.values if listed.get(v) != "nunca"] + ["unknown"]
        answers.append(Answer(question=factor.id, answer=draw(st.sampled_from(values))))
    return target, answers


@PROPERTY
@given(case=consistent_with_one(), strategy=st.sampled_from(STRATEGIES))
def test_consistent_answers_never_exclude_the_disease(
    case: tuple[str, list[Answer]], strategy: str
) -> None:
    target, answers = case
    result = consult(answers, strategy, kb=KB, settings=SETTINGS)  # type: ignore[arg-type]
    assert target not in excluded_ids(result)
    if strategy == "source":
        assert target in result.focus


@PROPERTY
@given(data=st.data(), strategy=st.sampled_from(STRATEGIES))
def test_the_cycle_terminates_and_never_asks_twice(data: st.DataObject, strategy: str) -> None:
    chief = data.draw(st.sampled_from(KB.symptom_ids))
    answers = [Answer(question=CHIEF_COMPLAINT, answer=chief)]
    for _ in range(len(QUESTIONS) + 1):  # one question per step at most: bounded by construction
        result = consult(answers, strategy, kb=KB, settings=SETTINGS)  # type: ignore[arg-type]
        if result.status == "diagnosis":
            assert result.diagnoses or (strategy == "source" and not result.focus)
            return
        assert result.question is not None
        assert result.question.id not in {a.question for a in answers} | {chief}
        reply = data.draw(st.sampled_from(result.question.allowed_answers))
        answers.append(Answer(question=result.question.id, answer=reply))
    pytest.fail("the consult did not end")


@st.composite
def any_valid_answers(draw: st.DrawFn) -> list[Answer]:
    chief = draw(st.sampled_from(KB.symptom_ids))
    answers = [Answer(question=CHIEF_COMPLAINT, answer=chief)]
    for question in draw(st.lists(st.sampled_from(QUESTIONS), unique=True, max_size=12)):
        if question == chief:
            continue
        if question in KB.symptom_ids:
            reply = draw(st.sampled_from(["yes", "no", "unknown"]))
        else:
            factor = next(f for f in KB.factors if f.id == question)
            reply = draw(st.sampled_from([*factor.values, "unknown"]))
        answers.append(Answer(question=question, answer=reply))
    return answers


@PROPERTY
@given(data=st.data(), answers=any_valid_answers(), strategy=st.sampled_from(STRATEGIES))
def test_the_result_does_not_depend_on_answer_order(
    data: st.DataObject, answers: list[Answer], strategy: str
) -> None:
    shuffled = data.draw(st.permutations(answers))
    first = consult(answers, strategy, kb=KB, settings=SETTINGS)  # type: ignore[arg-type]
    second = consult(shuffled, strategy, kb=KB, settings=SETTINGS)  # type: ignore[arg-type]
    assert first.model_dump() == second.model_dump()


def test_diseases_with_equal_evidence_keep_their_places_whatever_the_answer_order() -> None:
    """The property above found it: bronchitis and asthma tie here, and summing the evidence in
    the order given swapped them."""
    given = [("dor_perna", "yes"), ("prurido", "yes"), ("fadiga", "yes"), ("dor_toracica", "yes")]
    chief = Answer(question=CHIEF_COMPLAINT, answer="dispneia_subita")
    results = [
        consult(
            [chief, *(Answer(question=q, answer=a) for q, a in order)],
            "info_gain",
            kb=KB,
            settings=SETTINGS,
        ).model_dump()
        for order in (given, [given[3], given[1], given[0], given[2]])
    ]
    assert results[0]["status"] == "diagnosis" and results[0] == results[1]


@PROPERTY
@given(answers=st.one_of(st.just([]), any_valid_answers()), strategy=st.sampled_from(STRATEGIES))
def test_a_step_is_built_exactly_as_the_declared_schema_dumps_it(
    answers: list[Answer], strategy: str
) -> None:
    """The served answer is built as plain dicts (consult.py): it must be the JSON that
    validating it as `ConsultResult` and dumping it gives, byte for byte (fields, their order,
    values), so the declared schema stays the truth."""
    built = step(KB, read_answers(KB, answers), strategy, SETTINGS)  # type: ignore[arg-type]
    assert to_json(built) == ConsultResult.model_validate(built).model_dump_json().encode()


@PROPERTY
@given(answers=st.one_of(st.just([]), any_valid_answers()), strategy=st.sampled_from(STRATEGIES))
def test_a_step_answers_exactly_as_the_reference_step(answers: list[Answer], strategy: str) -> None:
    """The step looks its evidence up in tables built per KB and ranks in plain Python
    (consult.py); tests/consult_reference.py is the step as it computed everything before.
    Every answer must be the same, value for value and in the same order."""
    facts = read_answers(KB, answers)
    served = step(KB, facts, strategy, SETTINGS)  # type: ignore[arg-type]
    reference = consult_reference.step(KB, facts, strategy, SETTINGS)  # type: ignore[arg-type]
    assert to_json(served) == to_json(reference)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_consult_of_the_simulated_patients_ends_as_the_reference_step(strategy: str) -> None:
    """Whole consults, not only random answer lists: one patient per disease, answering as the
    KB describes it, every step compared."""
    for disease in KB.diseases:
        table = KB.disease_symptoms[disease.id]
        chief = next(s for s in KB.symptom_ids if table.get(s) in ("sempre", "alta"))
        answers = [Answer(question=CHIEF_COMPLAINT, answer=chief)]
        while True:
            facts = read_answers(KB, answers)
            served = step(KB, facts, strategy, SETTINGS)  # type: ignore[arg-type]
            reference = consult_reference.step(KB, facts, strategy, SETTINGS)  # type: ignore[arg-type]
            assert to_json(served) == to_json(reference), (disease.id, answers)
            if served["question"] is None:
                break
            question = served["question"]
            reply = "unknown"
            if question["kind"] == "symptom":
                reply = "yes" if table.get(question["id"], "nunca") in ("sempre", "alta") else "no"
            answers.append(Answer(question=question["id"], answer=reply))
