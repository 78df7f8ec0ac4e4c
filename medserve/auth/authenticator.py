"""Who is calling, and may they: credentials -> `Identity` -> the role a call needs.

Transport-free: the HTTP adapter hands over the bearer header, the page session cookie and the
proxy's headers; the gRPC interceptor the `authorization` metadata. Refusals are `ServiceError`s
(401 with `WWW-Authenticate`, 403 naming the missing role) that never echo a credential.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from medserve.auth.roles import Identity, Role, roles_from
from medserve.auth.settings import LOCAL_AUDIENCE, LOCAL_ISSUER, AuthMode, AuthSettings
from medserve.auth.tokens import (
    KeySource,
    LocalSigner,
    RemoteJwks,
    TokenRejected,
    TokenRules,
    TokenVerifier,
    digest,
)
from medserve.logs import get_logger
from medserve.serving.errors import ServiceError

log = get_logger("auth")
REALM = 'Bearer realm="medserve"'
ANONYMOUS = Identity("anonymous", frozenset(Role), via="off")


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a call presented (any may be missing)."""

    bearer: str | None = None
    session: str | None = None  # the page session cookie (a token)
    proxy_user: str | None = None
    proxy_groups: str | None = None


def bearer_of(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def unauthenticated(reason: str, token_problem: bool = True) -> ServiceError:
    challenge = REALM
    if token_problem:
        challenge += f', error="invalid_token", error_description="{reason}"'
    return ServiceError(401, "unauthenticated", reason, headers={"WWW-Authenticate": challenge})


def forbidden(role: Role) -> ServiceError:
    return ServiceError(403, "forbidden", f"this call needs the role '{role.value}'")


class Authenticator:
    """One worker's access checks, configured by `AuthSettings`."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.mode = settings.mode
        self.signer: LocalSigner | None = None
        self.verifier: TokenVerifier | None = None
        if self.mode is AuthMode.LOCAL:
            self.signer = LocalSigner(settings.key_file)
            rules = TokenRules(
                LOCAL_ISSUER, LOCAL_AUDIENCE, frozenset({"EdDSA"}), settings.leeway_s, "roles", ""
            )
            self.verifier = self._verifier(self.signer.key_set(), rules)
        elif settings.jwks_url and settings.issuer and settings.audience:
            jwks = RemoteJwks(
                settings.jwks_url,
                settings.jwks_cache_s,
                settings.jwks_refresh_cooldown_s,
                settings.jwks_timeout_s,
            )
            rules = TokenRules(
                settings.issuer,
                settings.audience,
                frozenset(settings.algorithms),
                settings.leeway_s,
                settings.roles_claim,
                settings.role_prefix,
            )
            self.verifier = self._verifier(jwks, rules)
        if self.mode is AuthMode.OFF:
            log.warning(
                "AUTHENTICATION IS OFF: every caller can read and write patient data "
                "(MEDSERVE_AUTH_MODE=off is for tests only)"
            )
        else:
            log.info("access control", extra={"mode": self.mode.value})

    def _verifier(self, keys: KeySource, rules: TokenRules) -> TokenVerifier:
        settings = self.settings
        return TokenVerifier(keys, rules, settings.token_cache_size, settings.token_cache_s)

    async def identify(self, credentials: Credentials) -> Identity:
        """The caller's identity, or a 401."""
        if self.mode is AuthMode.OFF:
            return ANONYMOUS
        # Behind the proxy every credential arrives from the browser's session with it.
        behind_proxy = self.mode is AuthMode.PROXY
        if credentials.bearer and self.verifier is not None:
            identity = await self._verify(credentials.bearer)
            return _with(identity, via="bearer", ambient=behind_proxy)
        if credentials.session and self.verifier is not None:
            identity = await self._verify(credentials.session)
            return _with(identity, via="session", ambient=True)
        if behind_proxy and credentials.proxy_user:
            return self._from_proxy(credentials.proxy_user, credentials.proxy_groups or "")
        raise unauthenticated("this call needs a bearer token", token_problem=False)

    async def _verify(self, token: str) -> Identity:
        assert self.verifier is not None
        try:
            return await self.verifier.verify(token)
        except TokenRejected as exc:
            raise unauthenticated(exc.reason) from None

    def _from_proxy(self, user: str, groups: str) -> Identity:
        roles = roles_from(groups.split(","), self.settings.role_prefix)
        return Identity(
            user.strip()[:256],
            roles,
            via="proxy",
            credential_digest=digest(f"{user}\n{groups}"),
            ambient=True,
        )

    @staticmethod
    def authorise(identity: Identity, role: Role) -> Role:
        """The identity's role that grants `role`, or a 403 naming `role`."""
        granted = identity.grants(role)
        if granted is None:
            raise forbidden(role)
        return granted


def _with(identity: Identity, via: str, ambient: bool) -> Identity:
    if identity.via == via and identity.ambient == ambient:
        return identity
    return dataclasses.replace(identity, via=via, ambient=ambient)
