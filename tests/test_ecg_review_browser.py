"""The ECG review page in real headless Chromium, and the loop it closes:
score -> a clinician confirms in the browser -> retraining uses the confirmed beat."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page

from medserve import model_store
from medserve.auth.roles import Role
from medserve.ecg.beats import NORMAL
from medserve.ecg.synthetic import SyntheticEcgConfig, generate
from medserve.settings import Settings
from tests.auth_tokens import token
from tests.conftest import ECG_TEST_TRAINING
from tests.servers import ServiceProcess, chromium_browser
from training.registry import TRAINERS

ROW_IDS = "rows => rows.map(r => r.dataset.id)"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium_browser() as b:
        yield b


@pytest.fixture
def page(browser: Browser, ecg_service: ServiceProcess) -> Iterator[Page]:
    """A clinician's browser after following a `?token=` link (what `medserve up` prints) with
    a review-only token: the service swaps it for an HttpOnly session cookie and redirects to
    the address without it; every page after that, form posts included, rides on the cookie."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{ecg_service.url}/review?token={token(Role.REVIEW, subject='dra.souza')}")
    assert page.url == f"{ecg_service.url}/review"  # the token left the address bar
    (cookie,) = context.cookies()
    assert cookie["name"] == "medserve_session" and cookie["httpOnly"]
    yield page
    context.close()


@pytest.fixture(scope="module")
def scored(ecg_service: ServiceProcess) -> dict[str, list[str]]:
    """Prediction ids of beats the model called normal and of severe ST-depression beats."""
    beats = generate(SyntheticEcgConfig(seed=7, normal_beats=12, abnormal_beats_per_class=6), 1)
    normal = beats.beats[beats.label == NORMAL]
    st = beats.beats[(beats.label == "st_depression") & (beats.severity == "severe")][:2]
    body = {"beats": [*normal.astype(float).tolist(), *st.astype(float).tolist()]}
    answers = httpx.post(
        f"{ecg_service.url}/predict", json=body, headers=ecg_service.auth_headers
    ).json()["predictions"]
    assert [a["anomalous"] for a in answers[-2:]] == [True, True]
    called_normal = [a["prediction_id"] for a in answers[:-2] if not a["anomalous"]]
    assert called_normal  # ~1 in 6 normal beats is above a mean + 1 std threshold
    return {"normal": called_normal, "anomalous": [a["prediction_id"] for a in answers[-2:]]}


def test_list_filters_by_verdict(
    page: Page, ecg_service: ServiceProcess, scored: dict[str, list[str]]
) -> None:
    page.goto(f"{ecg_service.url}/review")
    listed = set(
        page.locator("#beats tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    )
    assert set(scored["anomalous"]) <= listed
    page.select_option("#flag", "anomalous")
    page.click("#filter")
    page.wait_for_url("**/review?flag=anomalous**")
    rows = page.locator("#beats tbody tr")
    ids = set(rows.evaluate_all(ROW_IDS))
    assert set(scored["anomalous"]) <= ids
    assert not set(scored["normal"]) & ids
    assert all(v == "Anômalo" for v in rows.locator("td:nth-child(4)").all_inner_texts())
    page.fill("#since", "2000-01-01")
    page.fill("#until", "2000-12-31")
    page.click("#filter")
    page.wait_for_selector("#empty")


def test_beat_page_plots_and_confirms_into_the_next_training(
    page: Page, ecg_service: ServiceProcess, scored: dict[str, list[str]], tmp_path: Path
) -> None:
    normal_id = scored["normal"][0]
    page.goto(f"{ecg_service.url}/review")
    page.click(f"a[href='/review/{normal_id}']")
    page.wait_for_selector("#beat-plot")
    for element in ("#original", "#reconstruction", "#error-area"):
        assert page.locator(element).count() == 1
    points = page.get_attribute("#original", "points") or ""
    assert len(points.split()) == 140
    assert page.inner_text("#verdict").endswith("Normal")
    assert not page.is_checked("#anomalous")
    # The clinician disagrees with the model: this beat is anomalous.
    page.check("#anomalous")
    page.fill("#reviewer", "dra.souza")
    # A cookie session: the post carries the page's CSRF field (and a same-origin Origin).
    assert page.locator("#confirm-form input[name=csrf_token]").count() == 1
    page.click("#confirm")
    page.wait_for_selector("#confirmation")
    assert "Anômalo" in page.inner_text("#confirmation")
    assert page.is_checked("#anomalous")  # the confirmed label, not the model's verdict
    page.screenshot(path=str(tmp_path / "ecg-review.png"), full_page=True)

    service_home = ecg_service.log_path.parent
    settings = Settings(home=service_home)
    with pytest.MonkeyPatch.context() as env:
        for key, value in (ECG_TEST_TRAINING | {"epochs": 2}).items():
            env.setenv(f"MEDSERVE_ECG_TRAIN_{key.upper()}", str(value))
        outcome = TRAINERS["ecg_anomaly"](settings, True)
    card = model_store.load_card(outcome.tag)
    assert normal_id in card["feedback_prediction_ids"]
    assert outcome.metrics["n_feedback"] >= 1


def test_unknown_beat_is_404_in_the_error_shape(ecg_service: ServiceProcess) -> None:
    auth = ecg_service.auth_headers
    response = httpx.get(f"{ecg_service.url}/review/01J00000000000000000000000", headers=auth)
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_prediction"
    bad = httpx.get(f"{ecg_service.url}/review", params={"since": "31/12/2026"}, headers=auth)
    assert bad.status_code == 422 and bad.json()["field"] == "since"
