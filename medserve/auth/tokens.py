"""Bearer tokens: verification against a key set (an IdP's JWKS or the local key) with PyJWT,
and the local mode's signing key and minting.

Verification is strict the way KServe-behind-Istio and Triton's protected endpoints expect:
the header's algorithm must be on the allow-list *and* fit the key's type (no `none`, no HS256
"signed" with a public key), `iss`/`aud`/`exp`/`sub` are required, `nbf` honoured, with a small
leeway. JWKS are cached and refetched when an unknown `kid` appears (rotation without a restart),
at most once per cooldown so forged kids cannot hammer the IdP.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import secrets
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from medserve.auth.roles import Identity, Role, roles_from
from medserve.auth.settings import LOCAL_AUDIENCE, LOCAL_ISSUER
from medserve.logs import get_logger

log = get_logger("auth")

# Which algorithms fit which JWK key type.
ALGORITHMS_BY_KEY_TYPE = {
    "RSA": {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
    "EC": {"ES256", "ES384", "ES512"},
    "OKP": {"EdDSA"},
}
REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]


class TokenRejected(Exception):
    """A token that does not prove an identity; `reason` is safe to show (no token text)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A key of a key set and the algorithm its JWK pins (`alg`), if it pins one."""

    jwk: jwt.PyJWK
    algorithm: str | None


class KeySource(Protocol):
    async def key(self, kid: str | None) -> SigningKey | None: ...


def digest(token: str) -> str:
    """A short fingerprint of a credential (caches, CSRF binding), never the credential."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def parse_jwks(document: Mapping[str, Any]) -> dict[str | None, SigningKey]:
    """Usable signing keys of a JWKS by `kid` (keys PyJWT cannot use are skipped, as PyJWT
    does; encryption keys too)."""
    keys: dict[str | None, SigningKey] = {}
    for entry in document.get("keys", []):
        if not isinstance(entry, Mapping) or entry.get("use", "sig") != "sig":
            continue
        try:
            keys[entry.get("kid")] = SigningKey(jwt.PyJWK.from_dict(dict(entry)), entry.get("alg"))
        except jwt.PyJWTError:
            continue
    return keys


@dataclass
class StaticKeys:
    """A fixed key set (local mode)."""

    keys: dict[str | None, SigningKey]

    async def key(self, kid: str | None) -> SigningKey | None:
        return _pick(self.keys, kid)


def _pick(keys: Mapping[str | None, SigningKey], kid: str | None) -> SigningKey | None:
    if kid is None:  # a token without kid is only unambiguous against a one-key set
        return next(iter(keys.values())) if len(keys) == 1 else None
    return keys.get(kid)


class RemoteJwks:
    """An IdP's JWKS, fetched off the event loop, cached, refetched on an unknown kid."""

    def __init__(self, url: str, cache_s: float, cooldown_s: float, timeout_s: float) -> None:
        self.url = url
        self.cache_s = cache_s
        self.cooldown_s = cooldown_s
        self.timeout_s = timeout_s
        self._keys: dict[str | None, SigningKey] = {}
        self._fetched_at = -float("inf")
        self._lock: asyncio.Lock | None = None
        self._finished = 0  # fetches ended, whatever their outcome

    async def key(self, kid: str | None) -> SigningKey | None:
        age = time.monotonic() - self._fetched_at
        if age > self.cache_s:
            await self._refresh(min_age=self.cache_s)
        found = _pick(self._keys, kid)
        if found is None and time.monotonic() - self._fetched_at >= self.cooldown_s:
            await self._refresh(min_age=self.cooldown_s)  # rotation: a new kid appeared
            found = _pick(self._keys, kid)
        return found

    async def _refresh(self, min_age: float) -> None:
        self._lock = self._lock or asyncio.Lock()
        finished = self._finished
        async with self._lock:
            # One fetch at a time: calls that waited for a fetch use its result, even a failed
            # one (an outage must not become one timed-out fetch per waiting call).
            if self._finished != finished or time.monotonic() - self._fetched_at < min_age:
                return
            try:
                document = await asyncio.to_thread(self._fetch)
            except (OSError, ValueError) as exc:
                # Keep the keys we have; an IdP outage must not log everyone out at once.
                log.warning("jwks fetch failed", extra={"error": type(exc).__name__})
                self._fetched_at = time.monotonic() - self.cache_s + self.cooldown_s
                return
            finally:
                self._finished += 1
            self._keys = parse_jwks(document)
            self._fetched_at = time.monotonic()
            log.info("jwks fetched", extra={"keys": len(self._keys)})

    def _fetch(self) -> dict[str, Any]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        with opener.open(request, timeout=self.timeout_s) as response:
            document = json.loads(response.read(1_048_576))
        if not isinstance(document, dict):
            raise ValueError("a JWKS is a JSON object")
        return document


@dataclass(frozen=True)
class TokenRules:
    issuer: str
    audience: str
    algorithms: frozenset[str]
    leeway_s: float
    roles_claim: str
    role_prefix: str


class TokenVerifier:
    """Bearer token -> `Identity`, or `TokenRejected` naming what is wrong."""

    def __init__(
        self, keys: KeySource, rules: TokenRules, cache_size: int = 0, cache_s: float = 0
    ) -> None:
        self.keys = keys
        self.rules = rules
        self.cache_size = cache_size
        self.cache_s = cache_s
        # digest -> (identity, trusted until (monotonic), exp (epoch))
        self._cache: dict[str, tuple[Identity, float, float]] = {}

    async def verify(self, token: str) -> Identity:
        key = digest(token)
        cached = self._cache.get(key)
        if cached is not None:
            identity, trusted_until, expires = cached
            if time.monotonic() < trusted_until and time.time() < expires + self.rules.leeway_s:
                return identity
            del self._cache[key]
        identity, expires = await self._verify(token, key)
        if self.cache_size:
            if len(self._cache) >= self.cache_size:
                self._cache.clear()  # rare; a full re-verify costs ~0.1 ms per token
            self._cache[key] = (identity, time.monotonic() + self.cache_s, expires)
        return identity

    async def _verify(self, token: str, key_digest: str) -> tuple[Identity, float]:
        rules = self.rules
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("malformed token") from None
        algorithm = header.get("alg")
        if algorithm not in rules.algorithms:
            raise TokenRejected(f"algorithm {str(algorithm)[:16]!r} is not accepted")
        kid = header.get("kid")
        signing_key = await self.keys.key(kid if isinstance(kid, str) else None)
        if signing_key is None:
            raise TokenRejected("unknown signing key")
        fits = ALGORITHMS_BY_KEY_TYPE.get(signing_key.jwk.key_type, set())
        if algorithm not in fits or signing_key.algorithm not in (None, algorithm):
            raise TokenRejected("algorithm does not match the signing key")
        claims = _decode(token, signing_key.jwk, algorithm, rules)
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise TokenRejected("the token names no subject")
        roles = roles_from(_claim_values(claims, rules.roles_claim), rules.role_prefix)
        expires = float(claims["exp"])
        identity = Identity(subject[:256], roles, "bearer", key_digest, expires_at=expires)
        return identity, expires


def _decode(token: str, jwk: jwt.PyJWK, algorithm: str, rules: TokenRules) -> dict[str, Any]:
    try:
        return jwt.decode(
            token,
            jwk.key,
            algorithms=[algorithm],
            audience=rules.audience,
            issuer=rules.issuer,
            leeway=rules.leeway_s,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRejected("token expired") from None
    except jwt.ImmatureSignatureError:
        raise TokenRejected("token not yet valid") from None
    except jwt.InvalidIssuerError:
        raise TokenRejected("wrong issuer") from None
    except jwt.InvalidAudienceError:
        raise TokenRejected("wrong audience") from None
    except jwt.InvalidSignatureError:
        raise TokenRejected("bad signature") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRejected(f"missing claim {exc.claim}") from None
    except jwt.PyJWTError:
        raise TokenRejected("invalid token") from None


def _claim_values(claims: Mapping[str, Any], path: str) -> list[str]:
    """The strings at a dotted claim path: a list, or one space-separated string."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return []
        value = value.get(part)
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


# -- local mode ----------------------------------------------------------------------------------
def _write_new(path: Path, content: bytes) -> None:
    """Create `path` with `content` (0600) unless it exists; atomic, so workers starting at the
    same moment all end up reading the same complete file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another worker made it first
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def read_or_create_secret(path: Path) -> bytes:
    """A random 32-byte secret stored at `path` (created on first use)."""
    if not path.exists():
        _write_new(path, secrets.token_urlsafe(32).encode())
    return path.read_bytes().strip()


class LocalSigner:
    """The embedded platform's Ed25519 key: mints tokens and is the local key set."""

    def __init__(self, key_file: Path) -> None:
        if not key_file.exists():
            created = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            _write_new(key_file, created)
        private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{key_file} is not an Ed25519 private key")
        self._private = private
        public_jwk: dict[str, Any] = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
        self.kid = jwk_thumbprint(public_jwk)
        self.public_jwk = public_jwk | {"kid": self.kid, "alg": "EdDSA", "use": "sig"}

    def key_set(self) -> StaticKeys:
        return StaticKeys(parse_jwks({"keys": [self.public_jwk]}))

    def mint(self, subject: str, roles: list[Role], ttl_s: int) -> str:
        now = int(time.time())
        claims = {
            "iss": LOCAL_ISSUER,
            "aud": LOCAL_AUDIENCE,
            "sub": subject,
            "roles": [role.value for role in roles],
            "iat": now,
            "nbf": now,
            "exp": now + ttl_s,
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(claims, self._private, algorithm="EdDSA", headers={"kid": self.kid})


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 thumbprint: the key's required members, sorted, hashed."""
    members = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}
    canonical = json.dumps(
        {name: jwk[name] for name in members[jwk["kty"]]}, separators=(",", ":"), sort_keys=True
    )
    hashed = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(hashed).rstrip(b"=").decode()
