"""The live contract: each running service publishes the document its code generates, `/docs`
renders in Chromium from the service alone, and schemathesis fuzzes every operation of every
service (positive and negative data, stateful links) with zero 5xx and zero answers outside the
document, the service still ready afterwards.

Examples are bounded (`FUZZ_EXAMPLES` per operation and mode) to keep this file near two minutes
on two cores; `bench/fuzz.py` runs the long fuzz.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from medserve.auth.roles import Role
from tests.auth_tokens import bearer
from tests.fuzzing import fuzz_service
from tests.servers import ServiceProcess, chromium_browser

FUZZ_EXAMPLES = 25
STATEFUL_EXAMPLES = 10
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    with _NO_PROXY.open(url, timeout=30) as response:
        return response.status, dict(response.headers), response.read()


def fuzz_and_check(name: str, service: ServiceProcess) -> None:
    headers = bearer(Role.PREDICT, Role.REVIEW, Role.READ_LOG, subject="fuzz")
    report = fuzz_service(name, service.url, headers, FUZZ_EXAMPLES, STATEFUL_EXAMPLES)
    print(f"{name}: {report}")
    assert report.operations >= 18
    assert report.cases >= report.operations * FUZZ_EXAMPLES  # every operation was reached
    assert report.stateful_steps > 0
    # Past auth: most answers are not 401/403, and some calls succeed.
    assert report.statuses[401] + report.statuses[403] < report.cases / 3, report.statuses
    assert sum(n for status, n in report.statuses.items() if status < 300) > 0
    assert report.server_errors == 0, report.statuses
    assert report.failures == {}, "\n".join(f"{k}: {v}" for k, v in report.failures.items())
    assert get(f"{service.url}/v2/health/ready")[0] == 200
    assert get(f"{service.url}/readyz")[0] == 200


def test_heart_fuzz(heart_service: ServiceProcess) -> None:
    fuzz_and_check("heart_risk", heart_service)


def test_ecg_fuzz(ecg_service: ServiceProcess) -> None:
    fuzz_and_check("ecg_anomaly", ecg_service)


def test_ct_fuzz(ct_service: ServiceProcess) -> None:
    fuzz_and_check("ct_pattern", ct_service)


def test_triage_fuzz(triage_service: ServiceProcess) -> None:
    fuzz_and_check("respiratory_triage", triage_service)


def test_live_document_is_the_generated_one_and_needs_no_token(
    heart_service: ServiceProcess,
) -> None:
    from bentos.heart_risk import HeartRisk, http
    from medserve.serving.openapi import document

    status, headers, body = get(f"{heart_service.url}/openapi.json")
    assert status == 200 and headers["content-type"].startswith("application/json")
    live = json.loads(body)
    tag = live["info"]["version"]
    model = HeartRisk.inner.model_class
    # The fixture's MEDSERVE_MAX_INSTANCES_PER_REQUEST (100) reaches the document.
    expected = document(http.routes, model, f"heart_risk:{tag}", 100)
    assert live == json.loads(json.dumps(expected))


def test_docs_page_loads_in_chromium_without_external_requests(
    heart_service: ServiceProcess,
) -> None:
    requested: list[str] = []
    with chromium_browser() as browser:
        page = browser.new_page()
        page.on("request", lambda request: requested.append(request.url))
        response = page.goto(f"{heart_service.url}/docs")
        assert response is not None and response.status == 200
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert page.title() == "medserve heart_risk · API"
        operations: Any = page.locator("section.op")
        assert operations.count() >= 18
        assert page.locator("#post_predict").inner_text().count("predict") >= 1
        page.click('a[href="#schema-HeartPatient"] >> nth=0')
        assert page.locator("#schema-HeartPatient").is_visible()
        assert page.locator("script").count() == 0
    assert requested and all(url.startswith(heart_service.url) for url in requested), requested


@pytest.mark.parametrize("path", ["/openapi.json", "/docs"])
def test_contract_routes_answer_without_credentials(
    heart_service: ServiceProcess, path: str
) -> None:
    status, _, body = get(f"{heart_service.url}{path}")
    assert status == 200 and b"patients" in body


# -- what fuzzing found (fixed in the shared layer) ----------------------------------------------
def send(url: str, method: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, data=body or None, method=method, headers=headers or {})
    try:
        with _NO_PROXY.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_malformed_multipart_form_is_a_400_not_a_500(ecg_service: ServiceProcess) -> None:
    headers = {
        **bearer(Role.REVIEW),
        "content-type": "multipart/form-data; boundary=7c51",
    }
    body = b"--7c51\r\nNone--7c51--\r\n"  # a part without headers
    status, _, answer = send(
        f"{ecg_service.url}/review/01ARZ3NDEKTSV4RRFFQ69G5FAV", "POST", body, headers
    )
    assert status == 400, answer
    assert json.loads(answer)["error"] == "invalid_form"


@pytest.mark.parametrize("path", ["/predictions/a%0Ab", "/v2/models/x%0A/ready", "/%0A"])
def test_path_with_a_line_break_gets_the_shared_404(
    heart_service: ServiceProcess, path: str
) -> None:
    status, headers, answer = send(
        f"{heart_service.url}{path}", "GET", headers=bearer(Role.READ_LOG)
    )
    assert status == 404 and headers["content-type"] == "application/json"
    assert json.loads(answer)["error"] == "not_found"
