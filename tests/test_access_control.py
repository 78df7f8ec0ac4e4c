"""Access control on live services, against an identity provider run by the test.

- The heart service in `oidc` mode: the role matrix over HTTP and gRPC with the IdP's tokens, key
  rotation while it runs, the audit trail (one record per read, `medserve audit`), feedback that
  names who confirmed it, page sessions from `?token=`, CSRF/Origin/Host refusals with raw
  requests, security headers.
- The ECG service in trusted-proxy mode (what oauth2-proxy in front of the review pages gives):
  the review loop in Chromium with the proxy's headers, and a forged post from a second origin
  served by the test, refused with nothing stored.
- No token ever reaches a log line.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser
from sqlalchemy import select
from sqlalchemy.orm import Session

from medserve.audit import AuditTrail
from medserve.auth.roles import Role
from medserve.prediction_log import FeedbackRow, make_engine
from medserve.serving.http_security import CSRF_FIELD, SESSION_COOKIE
from tests.access_matrix import check_grpc_methods, check_http_routes, infer_input
from tests.conftest import ECG_TARGET, HEART_TARGET, service_env
from tests.heart_samples import dataset_patients
from tests.identity_provider import AUDIENCE, ISSUER, IdentityProvider, serving_jwks
from tests.servers import ServiceProcess, chromium_browser, medserve_service

PREFIX = "medserve-"
CLI = [sys.executable, "-m", "medserve.cli"]
ISSUED: list[str] = []  # every token this module handed out: none may appear in a log


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    with serving_jwks(IdentityProvider()) as provider:
        yield provider


def idp_env(idp: IdentityProvider, mode: str) -> dict[str, str]:
    return {
        "MEDSERVE_AUTH_MODE": mode,
        "MEDSERVE_AUTH_ISSUER": ISSUER,
        "MEDSERVE_AUTH_AUDIENCE": AUDIENCE,
        "MEDSERVE_AUTH_JWKS_URL": idp.url,
        "MEDSERVE_AUTH_ROLES_CLAIM": "realm_access.roles",
        "MEDSERVE_AUTH_ROLE_PREFIX": PREFIX,
        "MEDSERVE_AUTH_JWKS_REFRESH_COOLDOWN_S": "0",
    }


@pytest.fixture(scope="module")
def heart(
    heart_tag: str, idp: IdentityProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    home = tmp_path_factory.mktemp("heart-oidc")
    env = service_env(home, MEDSERVE_HEART_RISK_MODEL_TAG=heart_tag, **idp_env(idp, "oidc"))
    with medserve_service(HEART_TARGET, home, env) as service:
        yield service


@pytest.fixture(scope="module")
def ecg(
    ecg_tag: str, idp: IdentityProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    home = tmp_path_factory.mktemp("ecg-proxy")
    env = service_env(home, MEDSERVE_ECG_ANOMALY_MODEL_TAG=ecg_tag, **idp_env(idp, "proxy"))
    with medserve_service(ECG_TARGET, home, env) as service:
        yield service


def token(idp: IdentityProvider, roles: Sequence[Role], subject: str = "dr-ana", **kw: Any) -> str:
    minted = idp.token([PREFIX + role.value for role in roles], sub=subject, **kw)
    ISSUED.append(minted)
    return minted


def headers(
    idp: IdentityProvider, roles: Sequence[Role], subject: str = "dr-ana"
) -> dict[str, str]:
    return {"authorization": f"Bearer {token(idp, roles, subject)}"}


def home_of(service: ServiceProcess) -> Path:
    return service.log_path.parent


def audit_trail(service: ServiceProcess) -> AuditTrail:
    return AuditTrail(make_engine(f"sqlite:///{home_of(service) / 'prediction_log.sqlite3'}"))


def predict_heart(service: ServiceProcess, auth: dict[str, str], n: int = 3) -> list[str]:
    body = {"patients": dataset_patients()[:n]}
    answer = httpx.post(f"{service.url}/predict", json=body, headers=auth, timeout=30)
    assert answer.status_code == 200, answer.text
    return [p["prediction_id"] for p in answer.json()["predictions"]]


# -- the role matrix with the IdP's tokens ---------------------------------------------------------
def test_every_heart_route_and_method_checks_identity_and_role(
    heart: ServiceProcess, idp: IdentityProvider
) -> None:
    checked = check_http_routes(heart, HEART_TARGET, "heart_risk", lambda r: headers(idp, r))
    assert checked > 30
    features = np.array([[63, 1, 3, 145, 233, 1, 0, 150, 0, 2.3, 0, 0, 1]], dtype=np.float64)
    check_grpc_methods(
        heart, "heart_risk", infer_input("features", features, "FP64"), lambda r: headers(idp, r)
    )


def test_bad_idp_tokens_are_refused_over_http_and_grpc(
    heart: ServiceProcess, idp: IdentityProvider
) -> None:
    import tritonclient.grpc as tgrpc
    from tritonclient.utils import InferenceServerException

    impostor = IdentityProvider()
    bad = {
        "expired": token(idp, [Role.PREDICT], exp=1_000_000),
        "wrong issuer": token(idp, [Role.PREDICT], iss="https://evil.example"),
        "wrong key": impostor.token([PREFIX + "predict"]),
        "alg none": idp.unsigned([PREFIX + "predict"]),
        "hs256 with the public key": idp.hs256_with_public_key([PREFIX + "predict"]),
    }
    ISSUED.extend(bad.values())
    client = tgrpc.InferenceServerClient(heart.grpc_target)
    for case, bad_token in bad.items():
        answer = httpx.get(f"{heart.url}/model", headers={"authorization": f"Bearer {bad_token}"})
        assert answer.status_code == 401, case
        assert 'error="invalid_token"' in answer.headers["www-authenticate"], case
        assert bad_token not in answer.text
        with pytest.raises(InferenceServerException) as refused:
            client.get_model_metadata(
                "heart_risk", headers={"authorization": f"Bearer {bad_token}"}
            )
        assert refused.value.status() == "StatusCode.UNAUTHENTICATED", case


def test_a_key_rotated_while_running_is_accepted_without_a_restart(
    heart: ServiceProcess, idp: IdentityProvider
) -> None:
    idp.rotate("k-rotated", "EC")
    fresh = idp.token([PREFIX + "predict"], kid="k-rotated", sub="dr-rot")
    ISSUED.append(fresh)
    for _ in range(4):  # whichever worker answers fetches the new key set once
        answer = httpx.get(f"{heart.url}/model", headers={"authorization": f"Bearer {fresh}"})
        assert answer.status_code == 200, answer.text


# -- audit trail and feedback ----------------------------------------------------------------------
def test_a_log_read_writes_exactly_one_audit_record(
    heart: ServiceProcess, idp: IdentityProvider
) -> None:
    predict_heart(heart, headers(idp, [Role.PREDICT]))
    reader = headers(idp, [Role.READ_LOG], subject="auditor-1")
    before = audit_trail(heart).entries(since=_epoch())
    answer = httpx.get(f"{heart.url}/predictions", params={"limit": 2}, headers=reader)
    assert answer.status_code == 200
    read_ids = [row["id"] for row in answer.json()]
    new = [e for e in audit_trail(heart).entries(since=_epoch()) if e not in before]
    assert len(new) == 1
    (entry,) = new
    assert (entry.subject, entry.role, entry.route, entry.method) == (
        "auditor-1",
        "read_log",
        "/predictions",
        "GET",
    )
    assert entry.prediction_ids == read_ids and (entry.status, entry.outcome) == (200, "ok")
    assert entry.request_id == answer.headers["x-request-id"]
    # Refusals are audited too, without a subject when no identity was proven.
    httpx.get(f"{heart.url}/predictions/{read_ids[0]}")
    last = audit_trail(heart).entries(since=_epoch())[-1]
    assert (last.subject, last.status, last.prediction_ids) == ("-", 401, [read_ids[0]])


def test_medserve_audit_lists_a_subjects_accesses(
    heart: ServiceProcess, idp: IdentityProvider
) -> None:
    reader = headers(idp, [Role.READ_LOG], subject="auditor-cli")
    httpx.get(f"{heart.url}/predictions", params={"limit": 1}, headers=reader)
    env = dict(os.environ, MEDSERVE_HOME=str(home_of(heart)))
    listed = subprocess.run(
        [*CLI, "audit", "--since", "1h", "--subject", "auditor-cli", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(entries) == 1 and entries[0]["route"] == "/predictions"


def test_feedback_records_who_confirmed_it(heart: ServiceProcess, idp: IdentityProvider) -> None:
    (prediction_id,) = predict_heart(heart, headers(idp, [Role.PREDICT]), n=1)
    reviewer = headers(idp, [Role.REVIEW], subject="dr-rita")
    body = {"prediction_id": prediction_id, "label": 1, "reviewer": "Rita"}
    answer = httpx.post(f"{heart.url}/feedback", json=body, headers=reviewer)
    assert answer.status_code == 200, answer.text
    engine = make_engine(f"sqlite:///{home_of(heart) / 'prediction_log.sqlite3'}")
    with Session(engine) as session:
        row = session.scalars(
            select(FeedbackRow).where(FeedbackRow.prediction_id == prediction_id)
        ).one()
    assert (row.confirmed_by, row.reviewer, row.outcome) == ("dr-rita", "Rita", {"label": 1})
    entry = audit_trail(heart).entries(since=_epoch(), subject="dr-rita")[-1]
    assert (entry.route, entry.method, entry.prediction_ids) == (
        "/feedback",
        "POST",
        [prediction_id],
    )


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_feedback_needs_a_declared_json_body(
    heart: ServiceProcess, idp: IdentityProvider, content_type: str | None
) -> None:
    """A no-cors `fetch` can post text/plain or forms, never application/json."""
    (prediction_id,) = predict_heart(heart, headers(idp, [Role.PREDICT]), n=1)
    request_headers = headers(idp, [Role.REVIEW])
    if content_type:
        request_headers["content-type"] = content_type
    body = json.dumps({"prediction_id": prediction_id, "label": 1})
    answer = httpx.post(f"{heart.url}/feedback", content=body, headers=request_headers)
    assert answer.status_code == 415


# -- page sessions and browser protections (raw requests) ------------------------------------------
def session_client(
    service: ServiceProcess, idp: IdentityProvider, roles: list[Role]
) -> httpx.Client:
    """A client holding the page session cookie got from a `?token=` link."""
    client = httpx.Client(base_url=service.url, timeout=30)
    link = client.get("/ui", params={"token": token(idp, roles, "dr-page")})
    assert link.status_code == 303
    assert link.headers["location"] == "/ui"  # the token leaves the address bar
    cookie = link.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert all(flag in cookie.lower() for flag in ("httponly", "samesite=lax", "path=/"))
    assert "max-age=" in cookie.lower()
    return client


def csrf_of(page: str) -> str:
    match = re.search(rf'name="{CSRF_FIELD}" value="([0-9a-f]+)"', page)
    assert match, "the form carries a CSRF token"
    return match.group(1)


def form_fields(csrf: str | None) -> dict[str, str]:
    patient = {k: "" if v is None else str(v) for k, v in dataset_patients()[0].items()}
    return patient | ({CSRF_FIELD: csrf} if csrf is not None else {})


def predictions_logged(service: ServiceProcess, idp: IdentityProvider) -> int:
    answer = httpx.get(
        f"{service.url}/predictions", params={"limit": 500}, headers=headers(idp, [Role.READ_LOG])
    )
    return len(answer.json())


def test_page_session_cookie_and_same_origin_csrf_protected_posts(
    heart: ServiceProcess, idp: IdentityProvider
) -> None:
    client = session_client(heart, idp, [Role.PREDICT])
    page = client.get("/ui")
    assert page.status_code == 200
    for name, value in {
        "content-security-policy": "default-src 'none'",
        "x-frame-options": "DENY",
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-store",
    }.items():
        assert value in page.headers[name]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    csrf = csrf_of(page.text)
    own = {"origin": heart.url}
    before = predictions_logged(heart, idp)
    refused = {
        "cross-origin": client.post(
            "/ui", data=form_fields(csrf), headers={"origin": "https://evil.example"}
        ),
        "other port": client.post(
            "/ui", data=form_fields(csrf), headers={"origin": "http://127.0.0.1:1"}
        ),
        "no token": client.post("/ui", data=form_fields(None), headers=own),
        "wrong token": client.post("/ui", data=form_fields("0" * 64), headers=own),
        "null origin, no token": client.post(
            "/ui", data=form_fields(None), headers={"origin": "null"}
        ),
        "cross-site referer": client.post(
            "/ui", data=form_fields(csrf), headers={"referer": "https://evil.example/x"}
        ),
    }
    for case, answer in refused.items():
        assert answer.status_code == 403, case
        assert answer.json()["error"] == "csrf_failed", case
    assert predictions_logged(heart, idp) == before  # nothing was predicted or stored
    accepted = client.post("/ui", data=form_fields(csrf), headers=own)
    assert accepted.status_code == 200 and 'id="verdict"' in accepted.text
    referer = client.post("/ui", data=form_fields(csrf), headers={"referer": f"{heart.url}/ui"})
    assert referer.status_code == 200
    # Under our pages' no-referrer policy browsers send `Origin: null`: the CSRF token decides.
    null_origin = client.post("/ui", data=form_fields(csrf), headers={"origin": "null"})
    assert null_origin.status_code == 200
    assert predictions_logged(heart, idp) == before + 3


def test_the_session_cookie_never_authenticates_an_api(
    heart: ServiceProcess, idp: IdentityProvider
) -> None:
    client = session_client(heart, idp, [Role.PREDICT, Role.READ_LOG, Role.REVIEW])
    assert client.get("/predictions").status_code == 401
    assert client.post("/predict", json={"patients": dataset_patients()[:1]}).status_code == 401


def test_a_bad_page_token_sets_no_cookie(heart: ServiceProcess, idp: IdentityProvider) -> None:
    answer = httpx.get(f"{heart.url}/ui", params={"token": "not-a-token"})
    assert answer.status_code == 401 and "set-cookie" not in answer.headers


@pytest.mark.parametrize("host", ["evil.example", "attacker.test:3000", "127.0.0.2", ""])
def test_a_rebinding_host_header_is_400(
    heart: ServiceProcess, idp: IdentityProvider, host: str
) -> None:
    auth = headers(idp, [Role.PREDICT])
    answer = httpx.get(f"{heart.url}/model", headers=auth | {"host": host})
    assert answer.status_code == 400 and answer.json()["error"] == "bad_host"
    # Probes answer whatever the Host (kubelet and Prometheus use the pod IP).
    assert httpx.get(f"{heart.url}/metrics", headers={"host": host}).status_code == 200


# -- trusted-proxy mode: the review loop in Chromium, and a forged post from a second origin -------
PROXY_USER = {"x-auth-request-user": "dr-lia", "x-auth-request-groups": f"staff,{PREFIX}review"}


@contextlib.contextmanager
def attacker_site(target: str) -> Iterator[str]:
    """A second origin (its own port) whose page silently posts a label to `target` and tries a
    no-cors JSON-less write to /feedback."""
    prediction_id = target.rsplit("/", 1)[1]
    base = target.split("/review/")[0]
    page = f"""<!doctype html><html><body>
<form id="f" method="post" action="{target}"><input name="anomalous" value="on"></form>
<script>
fetch("{base}/feedback", {{method: "POST", mode: "no-cors", credentials: "include",
  body: JSON.stringify({{prediction_id: "{prediction_id}", label: 1}})}})
  .finally(() => document.getElementById("f").submit());
</script></body></html>""".encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium_browser() as b:
        yield b


def score_beats(ecg: ServiceProcess, idp: IdentityProvider) -> list[str]:
    from medserve.ecg.synthetic import SyntheticEcgConfig, generate

    beats = generate(SyntheticEcgConfig(seed=17, normal_beats=4, abnormal_beats_per_class=1), 1)
    body = {"beats": beats.beats[:3].astype(float).tolist()}
    answer = httpx.post(f"{ecg.url}/predict", json=body, headers=headers(idp, [Role.PREDICT]))
    assert answer.status_code == 200, answer.text
    return [p["prediction_id"] for p in answer.json()["predictions"]]


def confirmation(ecg: ServiceProcess, prediction_id: str) -> FeedbackRow | None:
    engine = make_engine(f"sqlite:///{home_of(ecg) / 'prediction_log.sqlite3'}")
    with Session(engine) as session:
        return session.get(FeedbackRow, prediction_id)


def test_review_through_the_proxy_in_chromium_and_a_forged_post_from_another_origin(
    ecg: ServiceProcess, idp: IdentityProvider, browser: Browser
) -> None:
    confirmed_id, attacked_id = score_beats(ecg, idp)[:2]
    context = browser.new_context(extra_http_headers=PROXY_USER)  # what oauth2-proxy adds
    page = context.new_page()
    page.goto(f"{ecg.url}/review/{confirmed_id}")
    page.check("#anomalous")
    page.fill("#reviewer", "Lia")
    page.click("#confirm")
    page.wait_for_selector("#confirmation")
    stored = confirmation(ecg, confirmed_id)
    assert stored is not None and (stored.confirmed_by, stored.outcome) == ("dr-lia", {"label": 1})

    with attacker_site(f"{ecg.url}/review/{attacked_id}") as evil:
        with page.expect_response(f"{ecg.url}/review/{attacked_id}") as forged:
            page.goto(evil)
        assert forged.value.status == 403
        assert json.loads(forged.value.body())["error"] == "csrf_failed"
    context.close()
    assert confirmation(ecg, attacked_id) is None  # neither the form nor the fetch stored a label


def test_proxy_mode_refuses_calls_without_the_proxys_identity(ecg: ServiceProcess) -> None:
    assert httpx.get(f"{ecg.url}/review").status_code == 401
    lacking = {"x-auth-request-user": "dr-lia", "x-auth-request-groups": f"{PREFIX}predict"}
    answer = httpx.get(f"{ecg.url}/review", headers=lacking)
    assert answer.status_code == 403 and "'review'" in answer.json()["detail"]
    assert httpx.get(f"{ecg.url}/review", headers=PROXY_USER).status_code == 200


# -- logs ------------------------------------------------------------------------------------------
def test_no_token_reaches_a_log_line(heart: ServiceProcess, ecg: ServiceProcess) -> None:
    assert len(ISSUED) > 20
    for service in (heart, ecg):
        text = service.log_text()
        assert "audit" in text  # the audit lines are there...
        for issued in ISSUED:
            signature = issued.rsplit(".", 1)[1]
            assert issued not in text  # ...and no credential, whole or in part
            assert not signature or signature[:24] not in text
        assert "Bearer" not in text


def _epoch() -> Any:
    from datetime import UTC, datetime

    return datetime(2000, 1, 1, tzinfo=UTC)
