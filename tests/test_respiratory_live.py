"""The triage service as `bentoml serve` runs it: HTTP JSON, OIP v2 over tritonclient HTTP and
gRPC, the Portuguese page end to end in Chromium, `/metrics` without patient values."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from playwright.sync_api import Browser, Page

from medserve.auth.roles import Role
from medserve.respiratory.consult import CHIEF_COMPLAINT
from tests.auth_tokens import token
from tests.servers import ServiceProcess, chromium_browser
from tests.triage_patients import answer_for

MODEL = "respiratory_triage"


def test_a_whole_consult_over_http(triage_service: ServiceProcess) -> None:
    answers = [{"question": CHIEF_COMPLAINT, "answer": "febre"}]
    with httpx.Client(base_url=triage_service.url, headers=triage_service.auth_headers) as client:
        for _ in range(64):
            response = client.post("/consult", json={"answers": answers})
            assert response.status_code == 200, response.text
            body = response.json()
            if body["status"] == "diagnosis":
                break
            answers.append(
                {"question": body["question"]["id"], "answer": answer_for(body["question"])}
            )
        assert body["diagnoses"][0]["disease"] == "influenza"
        record = client.get(f"/predictions/{body['prediction_id']}")
        assert record.status_code == 200 and record.json()["inputs"]["answers"] == answers
        refused = client.post("/consult", json={"answers": [{"question": "x", "answer": "y"}]})
        assert refused.status_code == 422 and refused.json()["error"] == "unknown_question"
        anonymous = httpx.post(f"{triage_service.url}/consult", json={"answers": []})
        assert anonymous.status_code == 401


def _consult_tensor(module: Any, consults: list[dict[str, Any]]) -> Any:
    tensor = module.InferInput("consult", [len(consults)], "BYTES")
    tensor.set_data_from_numpy(np.array([json.dumps(c).encode() for c in consults], dtype=object))
    return tensor


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_tritonclient_consults_over_v2(triage_service: ServiceProcess, transport: str) -> None:
    if transport == "http":
        module: Any = triton_http
        client: Any = triton_http.InferenceServerClient(triage_service.url.removeprefix("http://"))
    else:
        module = triton_grpc
        client = triton_grpc.InferenceServerClient(triage_service.grpc_target)
    headers = triage_service.auth_headers
    assert client.is_model_ready(MODEL, headers=headers)
    consults = [
        {"answers": []},
        {"answers": [{"question": CHIEF_COMPLAINT, "answer": "tosse"}], "strategy": "source"},
    ]
    result = client.infer(MODEL, [_consult_tensor(module, consults)], headers=headers)
    first, second = (json.loads(item) for item in result.as_numpy("consult").tolist())
    assert first["question"]["id"] == CHIEF_COMPLAINT
    assert second["strategy"] == "source" and second["question"]["kind"] == "symptom"
    assert result.as_numpy("prediction_id").tolist() == [b"", b""]
    client.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium_browser() as b:
        yield b


@pytest.fixture
def page(browser: Browser, triage_service: ServiceProcess) -> Iterator[Page]:
    """A clinician's browser after a `?token=` link: a session cookie, so every answer posted
    needs the page's CSRF token."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{triage_service.url}/triage?token={token(Role.PREDICT, subject='dr.lima')}")
    assert page.url == f"{triage_service.url}/triage"
    yield page
    context.close()


def test_the_page_walks_a_consult_to_its_diagnoses(
    page: Page, triage_service: ServiceProcess, tmp_path: Path
) -> None:
    assert page.locator("html").get_attribute("lang") == "pt-BR"
    assert "sintoma principal" in page.locator("#question").inner_text()
    assert page.locator("script").count() == 0
    page.click("#answer-febre")
    for _ in range(64):
        page.wait_for_selector("#question, #result")
        if page.locator("#result").count():
            break
        question = page.locator("#question").get_attribute("data-question") or ""
        assert page.locator("#focus li").count() >= 1  # the hypotheses beside the question
        kind = "symptom" if page.locator("#answer-yes").count() else "factor"
        page.click(f"#answer-{answer_for({'id': question, 'kind': kind})}")
    page.screenshot(path=str(tmp_path / "triage.png"), full_page=True)
    first = page.locator("ol.diagnoses li").first
    assert first.get_attribute("data-disease") == "influenza"
    assert "Influenza" in first.inner_text() and "CID-10 J11.1" in first.inner_text()
    assert "a favor" in first.inner_text()  # the why: answers that supported it
    assert "Em São Paulo" in first.locator(".climate").inner_text()  # the mined rules' insight
    prediction_id = page.locator("#prediction-id").inner_text()
    record = httpx.get(
        f"{triage_service.url}/predictions/{prediction_id}", headers=triage_service.auth_headers
    )
    assert record.status_code == 200 and record.json()["api"] == "triage_page"


def test_a_forged_answer_list_gets_a_422_page(page: Page, triage_service: ServiceProcess) -> None:
    # What a tampered form would post (the page itself runs no script).
    forged = "queixa_principal=pedra_no_rim"
    page.locator("#answer-febre").evaluate("(button, value) => { button.value = value; }", forged)
    page.click("#answer-febre")
    page.wait_for_selector("#error")
    assert "nenhuma doença" in page.locator("#error").inner_text()
    assert "pedra_no_rim" not in page.content()


def test_metrics_count_consults_without_patient_values(triage_service: ServiceProcess) -> None:
    text = httpx.get(f"{triage_service.url}/metrics").text
    assert 'medserve_triage_steps_total{model="respiratory_triage"' in text
    assert "medserve_triage_questions_per_consult_bucket" in text
    for value in ("febre", "tosse", "influenza", "pedra_no_rim"):
        assert value not in text
