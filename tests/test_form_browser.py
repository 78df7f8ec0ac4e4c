"""The heart form in real headless Chromium: fill, submit, read the result."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page

from medserve.heart.codes import FEATURES
from tests.heart_samples import VALID_PATIENT
from tests.servers import ServiceProcess, chromium_browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium_browser() as b:
        yield b


@pytest.fixture
def page(browser: Browser, heart_service: ServiceProcess) -> Iterator[Page]:
    # A client that sends its token itself (the ECG review test takes the `?token=` link path):
    # not an ambient credential, so the form post needs no CSRF field.
    context = browser.new_context(extra_http_headers=heart_service.auth_headers)
    page = context.new_page()
    page.goto(f"{heart_service.url}/ui")
    yield page
    context.close()


def _fill(page: Page, patient: dict) -> None:
    for spec in FEATURES:
        value = patient[spec.name]
        text = "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
        if spec.codes:
            page.select_option(f"#{spec.name}", text)
        else:
            page.fill(f"#{spec.name}", text)


def test_form_shows_all_fields_with_portuguese_labels(page: Page) -> None:
    for spec in FEATURES:
        label = page.locator(f"label[for={spec.name}]")
        assert spec.label_pt in label.inner_text()
        assert spec.name in label.inner_text()
    # Every code is shown with its verified meaning (cp 0 is asymptomatic, not typical angina).
    assert page.locator("#cp option[value='0']").inner_text() == "0 — asymptomatic"
    assert "não informado" in page.locator("#caa").inner_text()


def test_fill_submit_and_read_the_result(
    page: Page, heart_service: ServiceProcess, tmp_path: Path
) -> None:
    _fill(page, VALID_PATIENT)
    page.click("#submit")
    page.wait_for_selector("#verdict")
    page.screenshot(path=str(tmp_path / "heart-form.png"), full_page=True)
    verdict_class = int(page.get_attribute("#verdict", "data-class") or "-1")
    shown_cad = page.locator('#probabilities strong[data-class="coronary_artery_disease"]')
    shown = float(shown_cad.inner_text().rstrip(" %")) / 100
    auth = heart_service.auth_headers
    api = httpx.post(
        f"{heart_service.url}/predict", json={"patients": [VALID_PATIENT]}, headers=auth
    ).json()
    expected = api["predictions"][0]
    assert verdict_class == expected["class"]
    assert shown == pytest.approx(expected["probabilities"]["coronary_artery_disease"], abs=5e-4)
    assert page.locator("#chart path, #chart circle").count() >= 1
    prediction_id = page.inner_text("#prediction-id")
    stored = httpx.get(f"{heart_service.url}/predictions/{prediction_id}", headers=auth).json()
    assert stored["api"] == "form"
    assert stored["inputs"] == VALID_PATIENT


def test_out_of_range_value_is_explained_next_to_the_field(page: Page) -> None:
    _fill(page, VALID_PATIENT | {"chol": 999.0})
    page.click("#submit")
    page.wait_for_selector("#chol-error")
    assert "80-700 mg/dl" in page.inner_text("#chol-error")
    assert page.locator("#verdict").count() == 0
    assert page.input_value("#chol") == "999"  # what the clinician typed is kept


def test_missing_optional_codes_are_accepted(page: Page) -> None:
    _fill(page, VALID_PATIENT | {"caa": None, "thall": None})
    page.click("#submit")
    page.wait_for_selector("#verdict")
