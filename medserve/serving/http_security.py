"""HTTP access: identity and role per route, the audit trail, and the browser protections.

- Every non-probe route checks the `Host` header against `MEDSERVE_ALLOWED_HOSTS` (a DNS-rebinding
  page cannot talk to a service on 127.0.0.1 or a cluster address), then the caller's identity
  and the route's role.
- APIs accept only `Authorization: Bearer`. Pages (the heart form, the review pages) also accept
  a session cookie: a `?token=` link (what `medserve up` prints) is exchanged for an HttpOnly,
  SameSite cookie and redirected away, so the token leaves the address bar and history.
- Credentials a browser attaches by itself (the cookie, oauth2-proxy's session) are "ambient":
  a state-changing form post with them needs a same-origin `Origin`/`Referer` and a CSRF token
  bound to the identity (HMAC of subject and credential under a key shared by every pod).
- Pages get a strict CSP (no script at all), `frame-ancestors 'none'`, `nosniff`,
  `no-referrer`; every answer of a protected route is `Cache-Control: no-store`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from medserve.audit import AuditEntry, AuditTrail
from medserve.auth.authenticator import Authenticator, Credentials, bearer_of
from medserve.auth.roles import Identity, Role
from medserve.auth.settings import AuthSettings, CookieSecure
from medserve.auth.tokens import read_or_create_secret
from medserve.serving.errors import ServiceError

SESSION_COOKIE = "medserve_session"
TOKEN_PARAM = "token"
CSRF_FIELD = "csrf_token"
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Roles whose routes show or change patient data: every call to them is audited.
AUDITED_ROLES = frozenset({Role.REVIEW, Role.READ_LOG})
_PREDICTION_ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")

PROTECTED_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# The pages use no JavaScript; inline <style> and style attributes, inline SVG, same-origin forms.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
}


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    """Whether a Host header value (port ignored) matches an allowed pattern: exact,
    `*.example.org` (subdomains) or `*` (anything)."""
    name = _host_name(host)
    if not name:
        return False
    for pattern in patterns:
        pattern = pattern.lower().strip("[]")
        if pattern == "*" or name == pattern:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:3000
        return host[1 : host.find("]")] if "]" in host else ""
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def touched(request: Request, prediction_ids: Iterable[str]) -> None:
    """Name the predictions a call shows or changes, for its audit entry (well-formed ids only:
    a path segment could hold any text)."""
    request.state.prediction_ids = [p for p in prediction_ids if _PREDICTION_ID.match(p)]


def _touched_ids(request: Request) -> list[str]:
    """What the handler named, else the id in the path (also when the call was refused)."""
    named = getattr(request.state, "prediction_ids", None)
    if named is not None:
        return named  # type: ignore[no-any-return]
    in_path = request.path_params.get("prediction_id")
    return [in_path] if in_path and _PREDICTION_ID.match(in_path) else []


def identity_of(request: Request) -> Identity:
    """The caller, as established before the handler ran."""
    return request.state.identity  # type: ignore[no-any-return]


def csrf_input(request: Request) -> str:
    """The hidden form field every state-changing page form carries."""
    return f'<input type="hidden" name="{CSRF_FIELD}" value="{request.state.csrf_token}">'


class HttpAccess:
    """One worker's HTTP access checks and audit writer."""

    def __init__(
        self, authenticator: Authenticator, audit: AuditTrail | None, settings: AuthSettings
    ) -> None:
        self.authenticator = authenticator
        self.audit = audit
        self.settings = settings
        secret = settings.csrf_secret
        self._csrf_key = (
            secret.encode() if secret else read_or_create_secret(settings.csrf_secret_file)
        )

    # -- checks before the handler ---------------------------------------------------------------
    def check_host(self, request: Request) -> None:
        if not host_allowed(request.headers.get("host", ""), self.settings.allowed_hosts):
            raise ServiceError(400, "bad_host", "this Host is not served (MEDSERVE_ALLOWED_HOSTS)")

    async def identify(self, request: Request, page: bool) -> Identity:
        headers = request.headers
        settings = self.settings
        credentials = Credentials(
            bearer=bearer_of(headers.get("authorization")),
            session=request.cookies.get(SESSION_COOKIE) if page else None,
            proxy_user=headers.get(settings.proxy_user_header),
            # oauth2-proxy sends one header line per group; ingress-nginx one comma-joined line.
            proxy_groups=",".join(headers.getlist(settings.proxy_groups_header)) or None,
        )
        return await self.authenticator.identify(credentials)

    def check_origin(self, request: Request) -> None:
        """A state-changing call from a browser that names another origin is refused.

        Our pages send `Referrer-Policy: no-referrer`, under which browsers post their forms with
        `Origin: null` and no Referer: then nothing proves the origin and the CSRF token decides
        (it is always required on page posts with ambient credentials)."""
        origin = request.headers.get("origin")
        if origin in (None, "null") and (referer := request.headers.get("referer")):
            parts = urlsplit(referer)
            origin = f"{parts.scheme}://{parts.netloc}"
        if origin in (None, "null"):
            return
        if origin in self.settings.trusted_origins:
            return
        own_host = request.headers.get("host", "").lower()
        if urlsplit(origin).netloc.lower() != own_host or own_host == "":
            raise ServiceError(403, "csrf_failed", "cross-origin post refused")

    def csrf_token(self, identity: Identity) -> str:
        message = f"{identity.subject}\n{identity.credential_digest}".encode()
        return hmac.new(self._csrf_key, message, hashlib.sha256).hexdigest()

    def check_csrf(self, sent: object, identity: Identity) -> None:
        """The form's CSRF token must be the one issued to this identity."""
        if not isinstance(sent, str) or not hmac.compare_digest(sent, self.csrf_token(identity)):
            raise ServiceError(403, "csrf_failed", "missing or wrong CSRF token; reload the page")

    # -- page sessions ---------------------------------------------------------------------------
    async def start_session(self, request: Request) -> Response:
        """`GET page?token=...`: check the token, set the session cookie, drop it from the URL."""
        token = request.query_params[TOKEN_PARAM]
        identity = await self.authenticator.identify(Credentials(bearer=token))
        params = [(k, v) for k, v in request.query_params.multi_items() if k != TOKEN_PARAM]
        target = URL(path=request.url.path).include_query_params(**dict(params))
        response = RedirectResponse(str(target), status_code=303)
        lifetime = int(identity.expires_at - time.time()) if identity.expires_at else None
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=lifetime,
            path="/",
            secure=self._secure(request),
            httponly=True,
            samesite="lax",
        )
        return response

    def _secure(self, request: Request) -> bool:
        mode = self.settings.cookie_secure
        if mode is not CookieSecure.AUTO:
            return mode is CookieSecure.ALWAYS
        forwarded = request.headers.get("x-forwarded-proto", "")
        return request.url.scheme == "https" or forwarded.lower() == "https"

    # -- after the handler -----------------------------------------------------------------------
    async def record(
        self, request: Request, route: str, model: str, status: int, outcome: str, request_id: str
    ) -> None:
        """Audit one call of a patient-data route with what `request.state` proved."""
        if self.audit is None:
            return
        identity: Identity | None = getattr(request.state, "identity", None)
        role: Role | None = getattr(request.state, "role_used", None)
        entry = AuditEntry(
            subject=identity.subject if identity else "-",
            role=role.value if role else None,
            model=model,
            method=request.method,
            route=route,
            prediction_ids=_touched_ids(request),
            status=status,
            outcome=outcome,
            request_id=request_id,
        )
        # Fails closed: a busy database (DatabaseBusy, a 503 from the data plane) means the
        # call's answer is not sent, since nothing may be shown that is not on record.
        await self.audit.record_async(entry)


def protect_headers(response: Response) -> Response:
    response.headers.update(PROTECTED_HEADERS)
    if response.media_type == "text/html" or response.headers.get("content-type", "").startswith(
        "text/html"
    ):
        response.headers.update(PAGE_HEADERS)
    return response
