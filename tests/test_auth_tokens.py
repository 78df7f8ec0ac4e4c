"""Token verification against an identity provider run by the test (JWKS over HTTP on
127.0.0.1, keys made here): every way a token can be wrong, key rotation, the JWKS cache and its
cooldown, role claims, proxy headers, and the local mode's key and tokens."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medserve.auth.authenticator import Authenticator, Credentials, bearer_of
from medserve.auth.local import OperatorAccess, parse_duration
from medserve.auth.roles import Role, roles_from
from medserve.auth.settings import AuthMode, AuthSettings
from medserve.auth.tokens import LocalSigner
from medserve.serving.errors import ServiceError
from tests.identity_provider import AUDIENCE, ISSUER, IdentityProvider, claims, serving_jwks

PREDICT = ["medserve-predict"]


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    with serving_jwks(IdentityProvider()) as provider:
        yield provider


def oidc(idp: IdentityProvider, **overrides: Any) -> Authenticator:
    fields: dict[str, Any] = {
        "mode": AuthMode.OIDC,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks_url": idp.url,
        "roles_claim": "realm_access.roles",
        "role_prefix": "medserve-",
    }
    return Authenticator(AuthSettings(**fields | overrides))


def identify(auth: Authenticator, **credentials: str | None) -> Any:
    return asyncio.run(auth.identify(Credentials(**credentials)))


def refusal(auth: Authenticator, token: str) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        identify(auth, bearer=token)
    error = caught.value
    assert error.status == 401
    assert error.headers["WWW-Authenticate"].startswith('Bearer realm="medserve"')
    assert token not in error.detail and token not in str(error.headers)
    return error


def test_a_valid_token_names_the_subject_and_its_medserve_roles(idp: IdentityProvider) -> None:
    auth = oidc(idp)
    roles = ["medserve-predict", "medserve-read_log", "offline_access", "predict"]
    identity = identify(auth, bearer=idp.token(roles))
    assert identity.subject == "dr-ana"
    assert identity.roles == {Role.PREDICT, Role.READ_LOG}
    assert not identity.ambient


@pytest.mark.parametrize("kty", ["RSA", "EC", "OKP"])
def test_every_asymmetric_key_type_verifies(idp: IdentityProvider, kty: str) -> None:
    idp.keys = [idp.keys[0].make("k1", kty)]
    assert identify(oidc(idp), bearer=idp.token(PREDICT)).roles == {Role.PREDICT}


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": -120}, "token expired"),  # seconds from now (parameters are made at collection)
        ({"nbf": +600}, "token not yet valid"),
        ({"iss": "https://evil.example/realms/clinic"}, "wrong issuer"),
        ({"aud": "another-app"}, "wrong audience"),
        ({"sub": ""}, "the token names no subject"),
    ],
)
def test_bad_claims_are_refused_with_the_reason(
    idp: IdentityProvider, overrides: dict[str, Any], reason: str
) -> None:
    now = int(time.time())
    claims = {k: now + v if k in ("exp", "nbf") else v for k, v in overrides.items()}
    assert refusal(oidc(idp), idp.token(PREDICT, **claims)).detail == reason


def test_missing_required_claims_are_refused(idp: IdentityProvider) -> None:
    import jwt

    key = idp.keys[0]
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x"}  # no exp
    token = jwt.encode(body, key.private, algorithm="RS256", headers={"kid": "k1"})
    assert refusal(oidc(idp), token).detail == "missing claim exp"


def test_small_clock_skew_is_tolerated(idp: IdentityProvider) -> None:
    token = idp.token(PREDICT, exp=int(time.time()) - 5, nbf=int(time.time()) + 5)
    assert identify(oidc(idp), bearer=token).subject == "dr-ana"


def test_a_token_signed_by_another_key_with_a_known_kid_is_refused(idp: IdentityProvider) -> None:
    impostor = IdentityProvider()  # its own "k1"
    assert refusal(oidc(idp), impostor.token(PREDICT)).detail == "bad signature"


def test_alg_none_is_refused(idp: IdentityProvider) -> None:
    assert "not accepted" in refusal(oidc(idp), idp.unsigned(PREDICT)).detail


def test_hs256_signed_with_the_public_key_is_refused(idp: IdentityProvider) -> None:
    """The RS/HS confusion attack: HMAC keyed with the PEM of the IdP's public key."""
    assert "not accepted" in refusal(oidc(idp), idp.hs256_with_public_key(PREDICT)).detail


def test_an_algorithm_that_does_not_fit_the_key_is_refused(idp: IdentityProvider) -> None:
    ec_key = idp.rotate("k-ec", "EC")
    import jwt

    rsa_signed = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60},
        idp.keys[0].private,
        algorithm="RS256",
        headers={"kid": ec_key.kid},
    )
    assert refusal(oidc(idp), rsa_signed).detail == "algorithm does not match the signing key"


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "eyJ.eyJ", "x" * 5000])
def test_malformed_tokens_are_refused(idp: IdentityProvider, garbage: str) -> None:
    if garbage:
        assert refusal(oidc(idp), garbage).status == 401
    else:
        with pytest.raises(ServiceError) as caught:
            identify(oidc(idp), bearer=None)
        assert caught.value.headers["WWW-Authenticate"] == 'Bearer realm="medserve"'


def test_a_valid_token_without_the_role_is_forbidden_naming_the_role(
    idp: IdentityProvider,
) -> None:
    auth = oidc(idp)
    identity = identify(auth, bearer=idp.token(["medserve-review"]))
    with pytest.raises(ServiceError) as caught:
        auth.authorise(identity, Role.READ_LOG)
    assert caught.value.status == 403
    assert "read_log" in caught.value.detail
    assert auth.authorise(identity, Role.REVIEW) is Role.REVIEW


def test_admin_reads_the_log_but_neither_predicts_nor_labels(idp: IdentityProvider) -> None:
    auth = oidc(idp)
    admin = identify(auth, bearer=idp.token(["medserve-admin"]))
    assert auth.authorise(admin, Role.READ_LOG) is Role.ADMIN
    for role in (Role.PREDICT, Role.REVIEW):
        with pytest.raises(ServiceError):
            auth.authorise(admin, role)


def test_a_rotated_key_is_fetched_once_when_its_kid_first_appears(idp: IdentityProvider) -> None:
    auth = oidc(idp, jwks_refresh_cooldown_s=0)
    assert identify(auth, bearer=idp.token(PREDICT)).subject == "dr-ana"
    assert idp.fetches == 1
    idp.rotate("k2", "OKP")
    token = idp.token(PREDICT, kid="k2", sub="dr-bia")
    assert identify(auth, bearer=token).subject == "dr-bia"
    assert idp.fetches == 2
    identify(auth, bearer=idp.token(PREDICT, kid="k2", sub="dr-caio"))
    assert idp.fetches == 2  # cached


def test_unknown_kids_refetch_at_most_once_per_cooldown(idp: IdentityProvider) -> None:
    auth = oidc(idp, jwks_refresh_cooldown_s=60)
    identify(auth, bearer=idp.token(PREDICT))
    forger = IdentityProvider()
    for n in range(20):
        forger.rotate(f"forged-{n}")
        assert refusal(auth, forger.token(PREDICT, kid=f"forged-{n}")).detail == (
            "unknown signing key"
        )
    assert idp.fetches == 1


def test_a_jwks_outage_keeps_the_known_keys(idp: IdentityProvider) -> None:
    auth = oidc(idp, jwks_cache_s=0.01, jwks_refresh_cooldown_s=0)
    identify(auth, bearer=idp.token(PREDICT))
    assert auth.verifier is not None
    auth.verifier.keys.url = "http://127.0.0.1:9/nothing-here"  # type: ignore[attr-defined]
    time.sleep(0.05)
    assert identify(auth, bearer=idp.token(PREDICT, sub="dr-dan")).subject == "dr-dan"


def test_verified_tokens_are_cached_but_not_past_their_expiry(idp: IdentityProvider) -> None:
    auth = oidc(idp, leeway_s=0)
    token = idp.token(PREDICT, exp=int(time.time()) + 2)
    identify(auth, bearer=token)
    time.sleep(2.5)
    assert refusal(auth, token).detail == "token expired"


def test_the_roles_claim_can_be_a_flat_list_or_a_space_separated_string(
    idp: IdentityProvider,
) -> None:
    auth = oidc(idp, roles_claim="roles", role_prefix="")
    flat = idp.token([], **{"roles": ["review"]})
    assert identify(auth, bearer=flat).roles == {Role.REVIEW}
    listed = identify(auth, bearer=idp.token([], **{"roles": "predict read_log"}))
    assert listed.roles == {Role.PREDICT, Role.READ_LOG}


def test_oidc_settings_must_be_complete() -> None:
    with pytest.raises(ValueError, match="ISSUER"):
        AuthSettings(mode=AuthMode.OIDC, issuer=ISSUER)
    with pytest.raises(ValueError, match="asymmetric"):
        AuthSettings(algorithms=["RS256", "HS256"])


def test_proxy_mode_trusts_the_proxys_headers_as_ambient_credentials(
    idp: IdentityProvider,
) -> None:
    auth = Authenticator(AuthSettings(mode=AuthMode.PROXY, role_prefix="medserve-"))
    identity = identify(
        auth, proxy_user="dr-eva", proxy_groups="medserve-review,staff,medserve-read_log"
    )
    assert (identity.subject, identity.roles) == ("dr-eva", {Role.REVIEW, Role.READ_LOG})
    assert identity.ambient and identity.via == "proxy"
    with pytest.raises(ServiceError):
        identify(auth)
    # Outside proxy mode the same headers prove nothing.
    with pytest.raises(ServiceError):
        identify(oidc(idp), proxy_user="dr-eva", proxy_groups="medserve-review")


def test_proxy_mode_verifies_a_forwarded_bearer(idp: IdentityProvider) -> None:
    auth = Authenticator(
        AuthSettings(
            mode=AuthMode.PROXY,
            issuer=ISSUER,
            audience=AUDIENCE,
            jwks_url=idp.url,
            roles_claim="realm_access.roles",
            role_prefix="medserve-",
        )
    )
    identity = identify(auth, bearer=idp.token(PREDICT), proxy_user="ignored")
    assert identity.subject == "dr-ana" and identity.ambient
    refusal(auth, IdentityProvider().token(PREDICT))


def test_off_mode_is_anonymous_with_every_role_and_says_so_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    logging.getLogger("medserve").propagate = True
    try:
        with caplog.at_level(logging.WARNING, logger="medserve"):
            auth = Authenticator(AuthSettings(mode=AuthMode.OFF))
    finally:
        logging.getLogger("medserve").propagate = False
    assert any("AUTHENTICATION IS OFF" in r.getMessage() for r in caplog.records)
    assert identify(auth).roles == frozenset(Role)


def test_local_mode_creates_one_private_key_and_trusts_only_its_tokens(tmp_path: Path) -> None:
    key_file = tmp_path / "auth" / "key.pem"
    auth = Authenticator(AuthSettings(local_key_file=key_file))
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert LocalSigner(key_file).kid == auth.signer.kid  # type: ignore[union-attr]
    token = LocalSigner(key_file).mint("nurse", [Role.PREDICT], 60)
    assert identify(auth, bearer=token).roles == {Role.PREDICT}
    other = LocalSigner(tmp_path / "other.pem").mint("nurse", [Role.PREDICT], 60)
    assert refusal(auth, other).detail == "unknown signing key"  # kids are key thumbprints


def test_the_operator_gets_a_token_and_page_links_in_local_mode_only(tmp_path: Path) -> None:
    access = OperatorAccess.for_operator(AuthSettings(local_key_file=tmp_path / "k.pem"))
    assert access.token and access.page_link("http://h/ui") == f"http://h/ui?token={access.token}"
    assert access.token in access.lines()[-1]
    off = OperatorAccess.for_operator(AuthSettings(mode=AuthMode.OFF))
    assert off.token is None and "OFF" in off.lines()[0]


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None)],
)
def test_bearer_header_parsing(header: str, token: str | None) -> None:
    assert bearer_of(header) == token


@given(st.lists(st.text(max_size=12), max_size=8), st.sampled_from(["", "medserve-", "ms:"]))
@settings(max_examples=200, deadline=None)
def test_only_prefixed_known_role_names_become_roles(names: list[str], prefix: str) -> None:
    roles = roles_from(names, prefix)
    expected = {n.strip()[len(prefix) :] for n in names if n.strip().startswith(prefix)}
    assert {role.value for role in roles} == expected & {role.value for role in Role}


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "30m", "12h", "7d")] == [
        90,
        90,
        1800,
        43200,
        604800,
    ]
    for bad in ("", "0h", "-1h", "12 hours", "1.5h"):
        with pytest.raises(ValueError):
            parse_duration(bad)


@pytest.mark.parametrize(
    ("key_type", "size", "algorithm"),
    [
        ("RSA", 2048, "RS256"),
        ("RSA", 2048, "PS256"),
        ("EC", "P-256", "ES256"),
        ("OKP", "Ed25519", "EdDSA"),
    ],
)
@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")
def test_tokens_and_a_jwks_made_by_another_jose_library_verify(
    key_type: str, size: Any, algorithm: str
) -> None:
    """Keys, JWKS and tokens from joserfc (not PyJWT, which verifies): its habits are not ours."""
    from joserfc import jwt as jose_jwt
    from joserfc.jwk import ECKey, OKPKey, RSAKey

    key_class = {"RSA": RSAKey, "EC": ECKey, "OKP": OKPKey}[key_type]
    key = key_class.generate_key(size, parameters={"kid": "jose-1", "alg": algorithm, "use": "sig"})

    class JoseProvider(IdentityProvider):
        def jwks(self) -> dict[str, Any]:
            return {"keys": [key.as_dict(private=False)]}

    with serving_jwks(JoseProvider()) as provider:
        auth = oidc(provider)
        header = {"alg": algorithm, "kid": "jose-1"}
        body = claims(["medserve-review"], subject="dr-jose")
        token = jose_jwt.encode(header, body, key, algorithms=[algorithm])
        identity = identify(auth, bearer=token)
        assert (identity.subject, identity.roles) == ("dr-jose", {Role.REVIEW})
        forged = jose_jwt.encode(header, body | {"sub": "dr-x"}, key_class.generate_key(
            size, parameters={"kid": "jose-1"}), algorithms=[algorithm])  # fmt: skip
        assert refusal(auth, forged).detail == "bad signature"


def test_a_verified_token_is_trusted_at_most_token_cache_s(idp: IdentityProvider) -> None:
    """A key the IdP withdrew stops working once the verified-token cache lapses."""
    auth = oidc(idp, token_cache_s=0.5, jwks_cache_s=0.1, jwks_refresh_cooldown_s=0)
    token = idp.token(PREDICT)
    # Made first: generating an RSA key on a busy core can outlast the cache between the calls.
    new_key = idp.keys[0].make("k-new")
    identify(auth, bearer=token)
    idp.keys = [new_key]  # k1 withdrawn
    assert identify(auth, bearer=token).subject == "dr-ana"  # still cached
    time.sleep(0.6)
    assert refusal(auth, token).detail == "unknown signing key"


def test_concurrent_first_sightings_of_a_new_kid_fetch_the_jwks_once(
    idp: IdentityProvider,
) -> None:
    auth = oidc(idp, jwks_refresh_cooldown_s=0)
    identify(auth, bearer=idp.token(PREDICT))
    idp.rotate("k-burst")
    tokens = [idp.token(PREDICT, kid="k-burst", sub=f"dr-{n}") for n in range(10)]

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(*(auth.identify(Credentials(bearer=t)) for t in tokens))

    assert len({identity.subject for identity in asyncio.run(all_at_once())}) == 10
    assert idp.fetches == 2  # the first sight, then one refetch for the new kid


def test_every_proxy_group_header_line_is_read(tmp_path: Path) -> None:
    """oauth2-proxy sends one header line per group; ingress-nginx one comma-joined line."""
    from starlette.requests import Request

    from medserve.serving.http_security import HttpAccess

    proxy = AuthSettings(mode=AuthMode.PROXY, role_prefix="medserve-", csrf_secret="c" * 32)
    access = HttpAccess(Authenticator(proxy), None, proxy)
    lines = [b"staff", b"medserve-review", b"medserve-read_log,medserve-predict"]
    headers = [(b"x-auth-request-user", b"dr-eva")]
    headers += [(b"x-auth-request-groups", line) for line in lines]
    request = Request({"type": "http", "method": "GET", "headers": headers, "path": "/"})
    identity = asyncio.run(access.identify(request, page=True))
    assert identity.roles == {Role.REVIEW, Role.READ_LOG, Role.PREDICT}
