"""Typed settings of access control, read from `MEDSERVE_AUTH_*` (and `MEDSERVE_ALLOWED_HOSTS`).

Modes (docs/security.md says when to use which):
- `local` (the embedded default): tokens signed by a key the platform creates under
  `MEDSERVE_HOME` on first start; `medserve token` mints them, `medserve up` prints one.
- `oidc`: bearer tokens of a hospital's identity provider, checked against its JWKS.
- `proxy`: behind oauth2-proxy or an Istio ext-authz: the identity comes from the proxy's
  headers (or a forwarded bearer, checked as in `oidc`). Only safe when nothing but the proxy can
  reach the pods (the chart's NetworkPolicy).
- `off`: every caller is an anonymous admin. For tests of other things only; logged loudly.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from medserve.settings import get_settings

# Asymmetric algorithms only: an HS* token "signed" with a public key is refused by allow-list.
DEFAULT_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"]
DEFAULT_ALGORITHMS += ["ES512", "EdDSA"]
LOCAL_ISSUER = "medserve-local"
LOCAL_AUDIENCE = "medserve"


class AuthMode(StrEnum):
    LOCAL = "local"
    OIDC = "oidc"
    PROXY = "proxy"
    OFF = "off"


class CookieSecure(StrEnum):
    AUTO = "auto"  # Secure when the request came over https (or X-Forwarded-Proto says so)
    ALWAYS = "always"
    NEVER = "never"


class AuthSettings(BaseSettings):
    """Each field maps to `MEDSERVE_AUTH_<FIELD>`; `allowed_hosts` to `MEDSERVE_ALLOWED_HOSTS`."""

    model_config = SettingsConfigDict(
        env_prefix="MEDSERVE_AUTH_", extra="ignore", populate_by_name=True
    )

    mode: AuthMode = Field(default=AuthMode.LOCAL, description="local | oidc | proxy | off.")
    issuer: str | None = Field(default=None, description="Expected `iss` (oidc, proxy bearer).")
    audience: str | None = Field(default=None, description="Expected `aud` (oidc, proxy bearer).")
    jwks_url: str | None = Field(default=None, description="The identity provider's JWKS URL.")
    roles_claim: str = Field(
        default="roles",
        description="Claim holding the roles; a dotted path reads nested claims (Keycloak: "
        "`realm_access.roles`). A list of strings or one space-separated string.",
    )
    role_prefix: str = Field(
        default="",
        description="Prefix of medserve's roles among the IdP's roles or the proxy's groups "
        "(e.g. `medserve-`); others are ignored.",
    )
    algorithms: list[str] = Field(
        default=DEFAULT_ALGORITHMS, description="Accepted JWS algorithms (asymmetric only)."
    )
    leeway_s: float = Field(default=30, ge=0, le=300, description="Clock skew for exp/nbf/iat.")
    jwks_cache_s: float = Field(
        default=300, gt=0, description="How long a fetched JWKS is trusted before a refetch."
    )
    jwks_refresh_cooldown_s: float = Field(
        default=10,
        ge=0,
        description="Least time between refetches caused by an unknown `kid` (rotation), so a "
        "flood of forged kids cannot hammer the identity provider.",
    )
    jwks_timeout_s: float = Field(default=5, gt=0, description="JWKS fetch timeout.")
    token_cache_size: int = Field(
        default=4096, ge=0, description="Verified tokens remembered per worker (0 = none)."
    )
    token_cache_s: float = Field(
        default=60, ge=0, description="How long a verified token is trusted without re-checking."
    )
    proxy_user_header: str = Field(default="x-auth-request-user")
    proxy_groups_header: str = Field(default="x-auth-request-groups")
    local_key_file: Path | None = Field(
        default=None,
        description="Local mode's Ed25519 signing key (PEM); default "
        "`<MEDSERVE_HOME>/auth/local-signing-key.pem`, created on first start.",
    )
    local_token_ttl_s: int = Field(
        default=12 * 3600, gt=0, description="Lifetime of the token `medserve up` prints."
    )
    csrf_secret: str | None = Field(
        default=None,
        min_length=32,
        description="Key of the review/form CSRF tokens, the same in every pod; default a random "
        "one created under `<MEDSERVE_HOME>/auth/`.",
    )
    cookie_secure: CookieSecure = Field(default=CookieSecure.AUTO)
    trusted_origins: list[str] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) besides the service's own whose form posts "
        "are accepted (an ingress host that rewrites Host).",
    )
    allowed_hosts: list[str] = Field(
        default=["127.0.0.1", "localhost", "::1"],
        validation_alias="MEDSERVE_ALLOWED_HOSTS",
        description="Host header values served (port ignored); `*.example.org` matches "
        "subdomains, `*` anything. Any other Host is a 400 (DNS rebinding).",
    )

    @model_validator(mode="after")
    def _complete(self) -> AuthSettings:
        if self.mode is AuthMode.OIDC and not (self.issuer and self.audience and self.jwks_url):
            raise ValueError("oidc mode needs MEDSERVE_AUTH_ISSUER, _AUDIENCE and _JWKS_URL")
        bad = [a for a in self.algorithms if a.upper().startswith("HS") or a.lower() == "none"]
        if bad:
            raise ValueError(f"only asymmetric algorithms are accepted, not {bad}")
        return self

    @property
    def key_file(self) -> Path:
        return self.local_key_file or get_settings().home / "auth" / "local-signing-key.pem"

    @property
    def csrf_secret_file(self) -> Path:
        return get_settings().home / "auth" / "csrf-secret"


@lru_cache
def get_auth_settings() -> AuthSettings:
    return AuthSettings()
