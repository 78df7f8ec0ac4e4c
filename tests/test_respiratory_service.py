"""The triage service in-process: the published KB on the shared data plane and its adapters.

Consult steps over `/consult`, `/predict` and OIP v2 REST; the 422s; one log row per ended
consult; feedback with a disease; metrics and the diagnosis-mix drift; replicas answering
alternate steps; the KB review report; the KB tables on both database backends.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from medserve.audit import AuditTrail
from medserve.auth.authenticator import Authenticator
from medserve.auth.settings import AuthSettings
from medserve.database.engine import make_engine
from medserve.prediction_log import PredictionLog
from medserve.respiratory.consult import CHIEF_COMPLAINT
from medserve.respiratory.kb import load_kb
from medserve.respiratory.kb_tables import store_kb, stored_symptoms
from medserve.respiratory.model import KB_FILE, TriageModel
from medserve.respiratory.report import build_report
from medserve.respiratory.settings import get_triage_settings
from medserve.serving.dataplane import DataPlane
from medserve.serving.http_api import HttpApi
from medserve.serving.http_security import HttpAccess
from medserve.serving.model import StoredModel
from medserve.serving.service import http_api
from medserve.settings import Settings
from tests.auth_tokens import client_headers
from tests.servers import free_port, upgrade_once
from tests.triage_patients import FLU, answer_for

JSON = {"content-type": "application/json"}
MODEL = "respiratory_triage"


@dataclass
class Triage:
    plane: DataPlane
    http: HttpApi
    loop: asyncio.Runner

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        async def main() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.http.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://test", headers=client_headers()
            ) as client:
                if body is None:
                    return await client.request(method, path, **kwargs)
                content = json.dumps(body).encode()
                return await client.request(method, path, content=content, headers=JSON)

        return self.loop.run(main())

    def consult(self, answers: list[dict[str, str]], **extra: Any) -> httpx.Response:
        return self.call("POST", "/consult", {"answers": answers, **extra})


def make_triage(tmp_path: Path, tags: tuple[str, str], **overrides: Any) -> Triage:
    settings = Settings(home=tmp_path, grpc_port=free_port(), **overrides)
    upgrade_once(settings.resolved_database_url)
    kb_tag, rules_tag = tags
    model = TriageModel.load(kb_tag, {"respiratory_rules": rules_tag})
    plane = DataPlane(model, settings, PredictionLog(settings.resolved_database_url))
    auth = AuthSettings(
        local_key_file=AuthSettings().key_file, allowed_hosts=["test"], csrf_secret="x" * 32
    )
    api = http_api(_routes())
    api.attach(plane, HttpAccess(Authenticator(auth), AuditTrail(plane.log.engine), auth))
    return Triage(plane, api, asyncio.Runner())


def _routes() -> list[Any]:
    from medserve.respiratory.consult_api import CONSULT_ROUTES
    from medserve.respiratory.page import PAGE_ROUTES

    return [*CONSULT_ROUTES, *PAGE_ROUTES]


@pytest.fixture(scope="module")
def tags(triage_tag: str, rules_tag: str) -> tuple[str, str]:
    return triage_tag, rules_tag


@pytest.fixture
def triage(tmp_path: Path, tags: tuple[str, str]) -> Iterator[Triage]:
    service = make_triage(tmp_path, tags, drift_window=50, drift_min_samples=5)
    try:
        yield service
    finally:
        service.loop.close()


def run_to_end(triage: Triage, strategy: str | None = None) -> tuple[dict[str, Any], list]:
    answers = [{"question": CHIEF_COMPLAINT, "answer": "febre"}]
    extra = {"strategy": strategy} if strategy else {}
    for _ in range(64):
        response = triage.consult(answers, **extra)
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] == "diagnosis":
            return body, answers
        question = body["question"]
        answers.append({"question": question["id"], "answer": answer_for(question)})
    raise AssertionError("the consult did not end")


def rows_logged(triage: Triage) -> int:
    return len(triage.plane.log.recent(MODEL, limit=500))


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": MODEL, **labels}) or 0.0


# -- consult steps -------------------------------------------------------------------------------
def test_an_empty_answer_list_asks_the_chief_complaint_and_logs_nothing(triage: Triage) -> None:
    response = triage.consult([])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "question" and body["prediction_id"] is None
    assert body["question"]["id"] == CHIEF_COMPLAINT
    assert body["question"]["kind"] == "chief_complaint"
    assert "tosse" in body["question"]["allowed_answers"]
    assert body["kb_version"] == triage.plane.model.kb.version  # type: ignore[attr-defined]
    assert body["strategy"] == "info_gain"  # the measured better one, by default
    assert len(body["focus"]) == 15 and body["excluded"] == []
    assert rows_logged(triage) == 0


@pytest.mark.parametrize("strategy", ["info_gain", "source"])
def test_a_consult_ends_with_ranked_diagnoses_logged_once(triage: Triage, strategy: str) -> None:
    steps_before = sample("medserve_triage_steps_total", strategy=strategy, status="question")
    final, answers = run_to_end(triage, strategy)
    assert final["strategy"] == strategy
    diagnoses = final["diagnoses"]
    assert diagnoses and diagnoses[0]["disease"] == "influenza", diagnoses
    assert diagnoses[0]["icd10"] == "J11.1" and diagnoses[0]["title"]
    scores = [d["score"] for d in diagnoses]
    assert scores == sorted(scores, reverse=True)
    why = {e["question"]: e for e in diagnoses[0]["why"]}
    assert why["febre"]["effect"] == "supports" and why["febre"]["answer"] == "yes"
    # Exactly one prediction-log row: the final answer, with the answers in and diagnoses out.
    (record,) = triage.plane.log.recent(MODEL, limit=10)
    assert record.id == final["prediction_id"]
    assert record.inputs == {"answers": answers, "strategy": strategy}
    assert record.outputs["consult"]["diagnoses"] == diagnoses
    assert record.predicted_class == [d.id for d in triage.plane.model.kb.diseases].index(  # type: ignore[attr-defined]
        "influenza"
    )
    asked = len(answers) - 1
    steps = sample("medserve_triage_steps_total", strategy=strategy, status="question")
    assert steps == steps_before + asked


def test_consult_steps_are_a_hot_path_left_untraced() -> None:
    """Like `/predict`, `/consult` skips BentoML's OpenTelemetry middleware (~0.25 ms of CPU
    per step with sampling off); the page is not a hot path."""
    from opentelemetry.util.http import parse_excluded_urls

    from bentos.respiratory_triage import RespiratoryTriage

    excluded = parse_excluded_urls(RespiratoryTriage.config["tracing"]["excluded_urls"])
    assert excluded.url_disabled("http://127.0.0.1:3000/consult")
    assert excluded.url_disabled("http://127.0.0.1:3000/predict")
    assert not excluded.url_disabled("http://127.0.0.1:3000/triage")


def test_the_source_cycle_asks_the_symptom_most_shared_in_the_scope(triage: Triage) -> None:
    kb = triage.plane.model.kb  # type: ignore[attr-defined]
    body = triage.consult([{"question": CHIEF_COMPLAINT, "answer": "tosse"}], strategy="source")
    scope = [d.id for d in kb.diseases if "tosse" in kb.disease_symptoms[d.id]]
    assert body.json()["focus"] == scope

    def shared(symptom: str) -> int:
        return sum(kb.disease_symptoms[d].get(symptom, "nunca") != "nunca" for d in scope)

    asked = body.json()["question"]["id"]
    others = [s for s in kb.symptom_ids if s != "tosse"]
    assert shared(asked) == max(shared(s) for s in others)


@pytest.mark.parametrize(
    ("answers", "error"),
    [
        ([{"question": "chest_pain_xyz", "answer": "yes"}], "unknown_question"),
        ([{"question": CHIEF_COMPLAINT, "answer": "unicorn_bite"}], "first_symptom_unknown"),
        ([{"question": "febre", "answer": "yes"}], "chief_complaint_missing"),
        (
            [
                {"question": CHIEF_COMPLAINT, "answer": "tosse"},
                {"question": "febre", "answer": "maybe"},
            ],
            "answer_not_allowed",
        ),
        (
            [
                {"question": CHIEF_COMPLAINT, "answer": "tosse"},
                {"question": "febre", "answer": "yes"},
                {"question": "febre", "answer": "yes"},
            ],
            "duplicated_answer",
        ),
        (
            [
                {"question": CHIEF_COMPLAINT, "answer": "tosse"},
                {"question": "febre", "answer": "yes"},
                {"question": "febre", "answer": "no"},
            ],
            "contradictory_answer",
        ),
        (
            [
                {"question": CHIEF_COMPLAINT, "answer": "tosse"},
                {"question": "tosse", "answer": "no"},
            ],
            "contradictory_answer",
        ),
        (
            [
                {"question": CHIEF_COMPLAINT, "answer": "tosse"},
                {"question": "faixa_etaria", "answer": "centenario"},
            ],
            "answer_not_allowed",
        ),
    ],
)
def test_refused_answer_lists_are_a_422_naming_the_reason(
    triage: Triage, answers: list[dict[str, str]], error: str
) -> None:
    before = sample("medserve_rejected_requests_total", reason=error)
    response = triage.consult(answers)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == error and body["field"] == "answers"
    for text in ("maybe", "centenario", "chest_pain_xyz", "unicorn_bite"):
        assert text not in response.text  # the client's text is never echoed
    assert sample("medserve_rejected_requests_total", reason=error) == before + 1
    assert rows_logged(triage) == 0


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"answers": [], "strategy": "guess"}, 422, "validation_error"),
        ({"answers": [{"question": "febre"}]}, 422, "validation_error"),
        ({"answers": [], "session": "abc"}, 422, "validation_error"),
        ({"answers": [{"question": "febre", "answer": "yes"}] * 129}, 422, "validation_error"),
    ],
)
def test_malformed_consult_bodies_are_refused(
    triage: Triage, body: dict[str, Any], status: int, error: str
) -> None:
    response = triage.call("POST", "/consult", body)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error


def test_the_result_does_not_depend_on_the_order_answers_are_sent_in(triage: Triage) -> None:
    final, answers = run_to_end(triage)
    shuffled = [answers[0], *reversed(answers[1:])]
    again = triage.consult(shuffled).json()
    assert again["diagnoses"] == final["diagnoses"] and again["focus"] == final["focus"]


def test_replicas_answer_alternate_steps_as_one_would(
    tmp_path: Path, tags: tuple[str, str], triage: Triage
) -> None:
    """No server-side session: a second service (its own log) continues any consult."""
    other = make_triage(tmp_path / "replica", tags)
    try:
        answers = [{"question": CHIEF_COMPLAINT, "answer": "coriza"}]
        replicas = [triage, other]
        for step in range(64):
            body = replicas[step % 2].consult(answers).json()
            alone = triage.consult(answers).json()
            assert {k: body[k] for k in ("question", "focus", "diagnoses")} == {
                k: alone[k] for k in ("question", "focus", "diagnoses")
            }
            if body["status"] == "diagnosis":
                break
            answers.append(
                {"question": body["question"]["id"], "answer": answer_for(body["question"])}
            )
        assert body["status"] == "diagnosis"
    finally:
        other.loop.close()


def test_final_diagnoses_carry_the_climate_insight_of_the_answered_month(triage: Triage) -> None:
    # Factors may be answered before they are asked (a form filled in any order).
    answers = [
        {"question": CHIEF_COMPLAINT, "answer": "febre"},
        {"question": "temperatura", "answer": "baixa"},
        {"question": "mes", "answer": "jun"},
    ]
    for _ in range(64):
        body = triage.consult(answers).json()
        if body["status"] == "diagnosis":
            break
        assert body["question"]["id"] not in ("temperatura", "mes")  # never asked twice
        answers.append({"question": body["question"]["id"], "answer": answer_for(body["question"])})
    rules = triage.plane.model.rules  # type: ignore[attr-defined]
    for diagnosis in body["diagnoses"]:
        assert diagnosis["climate"] == rules.insight(diagnosis["icd10"], "baixa", "jun")
    flu = body["diagnoses"][0]
    assert flu["icd10"] == "J11.1"
    assert "frios" in flu["climate"] and "Junho" in flu["climate"]


def test_rules_of_an_icd_code_are_served_and_an_unknown_code_is_a_404(triage: Triage) -> None:
    response = triage.call("GET", "/rules/J11.1")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["rules"]["icd"] == "J11.1" and len(body["rules"]["folds"]) == 10
    assert body["data_source"] == "synthetic" and len(body["data_sha256"]) == 64
    assert body["text"] and all("temperatura" in line for line in body["text"])
    assert body["rules_tag"] == triage.plane.model.rules_tag  # type: ignore[attr-defined]
    missing = triage.call("GET", "/rules/Z99.9-ana")
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_icd"
    assert "ana" not in missing.text


# -- other APIs ----------------------------------------------------------------------------------
def test_predict_takes_several_consults_and_logs_only_the_ended_ones(triage: Triage) -> None:
    final, answers = run_to_end(triage)
    response = triage.call(
        "POST", "/predict", {"consults": [{"answers": []}, {"answers": answers}]}
    )
    assert response.status_code == 200, response.text
    first, second = response.json()["predictions"]
    assert first["prediction_id"] is None and first["consult"]["status"] == "question"
    assert second["prediction_id"] and second["consult"]["diagnoses"] == final["diagnoses"]
    assert rows_logged(triage) == 2  # the /consult run and the ended /predict consult


def test_v2_rest_carries_the_consult_json_in_a_bytes_tensor(triage: Triage) -> None:
    final, answers = run_to_end(triage)
    consults = [json.dumps({"answers": []}), json.dumps({"answers": answers})]
    request = {"inputs": [{"name": "consult", "datatype": "BYTES", "shape": [2], "data": consults}]}
    response = triage.call("POST", f"/v2/models/{MODEL}/infer", request)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    first, second = (json.loads(text) for text in outputs["consult"]["data"])
    assert first["question"]["id"] == CHIEF_COMPLAINT
    assert second["diagnoses"] == final["diagnoses"]
    ids = outputs["prediction_id"]["data"]
    assert ids[0] == "" and len(ids[1]) == 26  # only the ended consult concludes a case


def test_v2_refuses_a_consult_that_is_not_json(triage: Triage) -> None:
    request = {"inputs": [{"name": "consult", "datatype": "BYTES", "shape": [1], "data": ["{x"]}]}
    response = triage.call("POST", f"/v2/models/{MODEL}/infer", request)
    assert response.status_code == 400, response.text
    assert "consult.0" in response.text


def test_a_clinician_confirms_the_diagnosis_by_id_or_icd_code(triage: Triage) -> None:
    final, _ = run_to_end(triage)
    pid = final["prediction_id"]
    for label, stored in (("covid19", "covid19"), ("J11.1", "influenza")):
        response = triage.call("POST", "/feedback", {"prediction_id": pid, "label": label})
        assert response.status_code == 200, response.text
        assert triage.plane.log.feedback_of(pid) == {"label": stored}
    for label in ("gripe suína", 1):
        response = triage.call("POST", "/feedback", {"prediction_id": pid, "label": label})
        assert response.status_code == 422 and response.json()["error"] == "invalid_label"


# -- metrics and drift ---------------------------------------------------------------------------
def test_consult_metrics_and_the_diagnosis_mix_drift(triage: Triage) -> None:
    questions_before = sample("medserve_triage_questions_per_consult_count", strategy="info_gain")
    unknown_before = sample("medserve_triage_answers_total", answer="unknown")
    for _ in range(6):  # drift_min_samples = 5 ended consults
        _, answers = run_to_end(triage)
    unknown = sum(a["answer"] == "unknown" for a in answers)
    assert sample("medserve_triage_questions_per_consult_count", strategy="info_gain") == (
        questions_before + 6
    )
    assert sample("medserve_triage_answers_total", answer="unknown") == unknown_before + 6 * unknown
    # Six influenza consults against the KB's prior mix of 15 diseases: a large PSI.
    triage.plane._export_drift()
    psi = REGISTRY.get_sample_value(
        "medserve_feature_psi", {"model": MODEL, "feature": "diagnosis"}
    )
    assert psi is not None and psi > 1.0


# -- the KB as a stored model, in the database, and the review report --------------------------
def test_an_altered_stored_kb_is_refused(tmp_path: Path, triage_tag: str) -> None:
    stored = StoredModel.open(triage_tag)
    copy = tmp_path / "model"
    shutil.copytree(stored.folder, copy)
    text = (copy / KB_FILE).read_text().replace("prior: alta", "prior: baixa", 1)
    (copy / KB_FILE).write_text(text)
    altered = StoredModel(tag=stored.tag, folder=copy, reference=stored.reference)
    with pytest.raises(RuntimeError, match="SHA-256"):
        TriageModel.from_store(altered)


def test_kb_tables_mirror_the_file_once_per_version(database: str) -> None:
    kb = load_kb(get_triage_settings().kb_path)
    engine = make_engine(database)
    try:
        store_kb(engine, kb, "respiratory_triage:test")  # maybe already there (shared database)
        assert store_kb(engine, kb, "respiratory_triage:test") is False
        assert stored_symptoms(engine, kb.version) == kb.disease_symptoms
    finally:
        engine.dispose()


def test_the_review_report_counts_confirmations_and_disagreements(
    tmp_path: Path, tags: tuple[str, str]
) -> None:
    triage_tag = tags[0]
    triage = make_triage(tmp_path, tags)
    try:
        final, _ = run_to_end(triage)
        confirmed, _ = run_to_end(triage)
        triage.call(
            "POST", "/feedback", {"prediction_id": final["prediction_id"], "label": "J11.1"}
        )
        # The second patient turned out to have COVID-19: its "no" to anosmia (perda_olfato) is
        # then an answer against the KB only if the KB says alta/sempre for it.
        triage.call(
            "POST", "/feedback", {"prediction_id": confirmed["prediction_id"], "label": "covid19"}
        )
        kb = triage.plane.model.kb  # type: ignore[attr-defined]
        store_kb(triage.plane.log.engine, kb, triage_tag)
        report = build_report(triage.plane.log.engine)
    finally:
        triage.loop.close()
    by_disease = {r.disease: r for r in report.diseases}
    flu = by_disease["influenza"]
    assert report.consults == 2 and report.confirmed == 2
    assert (flu.ranked_first, flu.confirmed_when_first, flu.other_confirmed_when_first) == (2, 1, 1)
    covid = by_disease["covid19"]
    assert covid.confirmed_total == 1
    expected = {
        s
        for s, p in kb.disease_symptoms["covid19"].items()
        if p in ("sempre", "alta") and s not in FLU
    } | {s for s in FLU if kb.disease_symptoms["covid19"].get(s) in (None, "nunca", "baixa")}
    asked = {d.symptom for d in covid.disagreements}
    assert asked and asked <= expected
