"""The benchmarks' access to medserve's authenticated services, and what verifying a token costs.

Every medserve route the benchmarks load (inference, metadata, `GET /predictions*`) needs
`Authorization: Bearer <token>` (gRPC: `authorization` metadata). `bench_token` mints one with
the local signing key of the current `MEDSERVE_HOME` (the benchmarks isolate it with
`bench.heart_serving.isolate_homes` first), so the service a benchmark starts from the same
environment trusts it; with `MEDSERVE_AUTH_MODE=off` there is none to send. The helpers below put
it into each client's form: HTTP headers (wrk, urllib), h2load `-H` lines, gRPC metadata.
`/metrics`, `/livez`, `/readyz` are open and need nothing. MLServer has no access control: its
requests stay as they were.

`verification_costs` times `TokenVerifier.verify` in this process, cold (first sight of a token:
header, key, signature and claims checked) and warm (the per-worker cache of verified tokens),
for the local mode's Ed25519 tokens and an identity provider's RS256 ones.
``uv run python -m bench.access`` prints that table on its own.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.h2load import GRPC_HEADERS, percentile
from bench.loadgen import markdown_table

BENCH_SUBJECT = "bench"
TOKEN_TTL_S = 24 * 3600
AUTHORIZATION = "authorization"  # HTTP header (case-insensitive) and gRPC metadata key
# The tokens `verification_costs` times: the local mode's and a typical identity provider's.
TOKEN_KINDS = {"EdDSA": "Ed25519 (local mode)", "RS256": "RSA 2048 (identity provider)"}


def bench_token(mode: str | None = None) -> str | None:
    """A bearer token with the roles `predict` and `read_log`, signed by the local key of the
    current MEDSERVE_HOME (created on first use, as the service does); None in `off` mode.

    `mode` overrides MEDSERVE_AUTH_MODE (for a benchmark that starts the service with an
    explicit mode). Identity-provider modes are refused: the benchmarks have no IdP."""
    from medserve.auth.settings import AuthMode, AuthSettings

    settings = AuthSettings() if mode is None else AuthSettings(mode=AuthMode(mode))
    if settings.mode is AuthMode.OFF:
        return None
    if settings.mode is not AuthMode.LOCAL:
        raise RuntimeError(
            f"MEDSERVE_AUTH_MODE={settings.mode.value}: the benchmarks mint tokens with the "
            "local key only; run them in local (the default) or off mode"
        )
    return _minted(settings.key_file)


@functools.cache
def _minted(key_file: Path) -> str:
    """One token per signing key and process (the services cache verified tokens by digest)."""
    from medserve.auth.local import mint
    from medserve.auth.roles import Role
    from medserve.auth.settings import AuthMode, AuthSettings

    settings = AuthSettings(mode=AuthMode.LOCAL, local_key_file=key_file)
    return mint(settings, [Role.PREDICT, Role.READ_LOG], TOKEN_TTL_S, BENCH_SUBJECT)


def auth_headers(token: str | None) -> dict[str, str]:
    """HTTP headers carrying `token` (wrk, urllib, httpx); empty without a token."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def grpc_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying `token` (grpcio `metadata=`, tritonclient `headers=`)."""
    return ((AUTHORIZATION, f"Bearer {token}"),) if token else ()


def h2load_headers(token: str | None) -> tuple[str, ...]:
    """h2load `-H` lines of a gRPC call: content type, `te: trailers` and the token."""
    return (*GRPC_HEADERS, *(f"{k}: {v}" for k, v in grpc_metadata(token)))


# --------------------------------------------------------------------------- verification cost


@dataclass(frozen=True, slots=True)
class VerifyCost:
    """`TokenVerifier.verify` timed call by call for one algorithm and cache state."""

    algorithm: str
    cache: str
    calls: int
    mean_us: float
    p50_us: float
    p99_us: float


def _signing_keys() -> list[tuple[str, Any, dict[str, Any]]]:
    """(algorithm, private key, public JWK) for each of TOKEN_KINDS."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

    ed25519 = Ed25519PrivateKey.generate()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return [
        ("EdDSA", ed25519, json.loads(OKPAlgorithm.to_jwk(ed25519.public_key()))),
        ("RS256", rsa_key, json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key()))),
    ]


def _timed_ns(verifier: Any, tokens: list[str]) -> list[int]:
    """ns of each `await verifier.verify(token)`, in order, in one event loop."""

    async def loop() -> list[int]:
        durations = []
        for token in tokens:
            began = time.perf_counter_ns()
            await verifier.verify(token)
            durations.append(time.perf_counter_ns() - began)
        return durations

    return asyncio.run(loop())


def _cost(algorithm: str, cache: str, durations_ns: list[int]) -> VerifyCost:
    ordered = sorted(durations_ns)
    return VerifyCost(
        algorithm,
        cache,
        len(ordered),
        sum(ordered) / len(ordered) / 1e3,
        percentile(ordered, 50) / 1e3,
        percentile(ordered, 99) / 1e3,
    )


def verification_costs(cold_tokens: int = 400, warm_calls: int = 20_000) -> list[VerifyCost]:
    """Per algorithm: `cold_tokens` distinct tokens verified once each (every one a first
    sight: header, key lookup, signature, claims), then one of them `warm_calls` times (the
    verified-token cache). Rules and cache as the services run them (AuthSettings defaults)."""
    import jwt

    from medserve.auth.roles import Role
    from medserve.auth.settings import LOCAL_AUDIENCE, LOCAL_ISSUER, AuthSettings
    from medserve.auth.tokens import StaticKeys, TokenRules, TokenVerifier, parse_jwks

    defaults = AuthSettings.model_fields
    cache_size = max(defaults["token_cache_size"].default, cold_tokens + 1)
    cache_s = defaults["token_cache_s"].default
    leeway = defaults["leeway_s"].default
    roles = [Role.PREDICT.value, Role.READ_LOG.value]
    costs = []
    for algorithm, private, public in _signing_keys():
        kid = f"bench-{algorithm.lower()}"
        keys = StaticKeys(parse_jwks({"keys": [public | {"kid": kid, "alg": algorithm}]}))
        local = algorithm == "EdDSA"
        issuer = LOCAL_ISSUER if local else "https://idp.example/realms/hospital"
        rules = TokenRules(issuer, LOCAL_AUDIENCE, frozenset({algorithm}), leeway, "roles", "")
        now = int(time.time())
        claims = {"iss": issuer, "aud": LOCAL_AUDIENCE, "sub": BENCH_SUBJECT, "roles": roles}
        claims |= {"iat": now, "nbf": now, "exp": now + 3600}
        tokens = [
            jwt.encode(
                claims | {"jti": secrets.token_hex(8)},
                private,
                algorithm=algorithm,
                headers={"kid": kid},
            )
            for _ in range(cold_tokens)
        ]
        verifier = TokenVerifier(keys, rules, cache_size, cache_s)
        _timed_ns(TokenVerifier(keys, rules), tokens[:20])  # warm PyJWT/cryptography code paths
        costs.append(_cost(algorithm, "cold (first sight)", _timed_ns(verifier, tokens)))
        warm = _timed_ns(verifier, [tokens[0]] * warm_calls)
        costs.append(_cost(algorithm, "warm (cached)", warm))
    return costs


def costs_table(costs: list[VerifyCost]) -> str:
    return markdown_table(
        [
            {
                "token": f"{c.algorithm}, {TOKEN_KINDS[c.algorithm]}",
                "cache": c.cache,
                "calls": c.calls,
                "mean µs": f"{c.mean_us:.1f}",
                "p50 µs": f"{c.p50_us:.1f}",
                "p99 µs": f"{c.p99_us:.1f}",
            }
            for c in costs
        ]
    )


def main() -> None:
    print(costs_table(verification_costs()))


if __name__ == "__main__":
    main()
