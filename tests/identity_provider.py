"""A test identity provider: its own keys, a JWKS served over HTTP on 127.0.0.1, and tokens.

Keys are made by the test (RSA, EC P-256, Ed25519); rotation adds a key while services run;
`fetches` counts JWKS downloads (cache and cooldown checks).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "https://idp.test/realms/clinic"
AUDIENCE = "medserve"
ALGORITHM_OF = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class KeyPair:
    kid: str
    private: Any
    kty: str

    @classmethod
    def make(cls, kid: str, kty: str = "RSA") -> KeyPair:
        private: Any
        if kty == "RSA":
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif kty == "EC":
            private = ec.generate_private_key(ec.SECP256R1())
        else:
            private = ed25519.Ed25519PrivateKey.generate()
        return cls(kid, private, kty)

    @property
    def algorithm(self) -> str:
        return ALGORITHM_OF[self.kty]

    def public_jwk(self) -> dict[str, Any]:
        to_jwk = {"RSA": RSAAlgorithm, "EC": ECAlgorithm, "OKP": OKPAlgorithm}[self.kty].to_jwk
        jwk: dict[str, Any] = json.loads(to_jwk(self.private.public_key()))
        return jwk | {"kid": self.kid, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def claims(
    roles: list[str] | None = None, subject: str = "dr-ana", lifetime_s: int = 600, **extra: Any
) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime_s,
        "realm_access": {"roles": roles if roles is not None else ["medserve-predict"]},
    }
    return base | extra


@dataclass
class IdentityProvider:
    keys: list[KeyPair] = field(default_factory=lambda: [KeyPair.make("k1")])
    fetches: int = 0
    url: str = ""

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.public_jwk() for key in self.keys]}

    def key(self, kid: str) -> KeyPair:
        return next(key for key in self.keys if key.kid == kid)

    def rotate(self, kid: str, kty: str = "RSA") -> KeyPair:
        new = KeyPair.make(kid, kty)
        self.keys.append(new)
        return new

    def token(self, roles: list[str] | None = None, /, kid: str = "k1", **overrides: Any) -> str:
        """A token signed by key `kid` with `claims(roles)` updated by `overrides`."""
        key = self.key(kid)
        body = claims(roles) | overrides
        return jwt.encode(body, key.private, algorithm=key.algorithm, headers={"kid": kid})

    @staticmethod
    def unsigned(roles: list[str] | None = None, kid: str = "k1") -> str:
        """`alg: none`: no signature at all."""
        header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
        return f"{header}.{_b64(json.dumps(claims(roles)).encode())}."

    def hs256_with_public_key(self, roles: list[str] | None = None, kid: str = "k1") -> str:
        """The algorithm-confusion attack: HS256 keyed with the RSA public key's PEM."""
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
        payload = _b64(json.dumps(claims(roles)).encode())
        signing_input = f"{header}.{payload}".encode()
        mac = hmac.new(self.key(kid).public_pem(), signing_input, hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(mac)}"


@contextlib.contextmanager
def serving_jwks(provider: IdentityProvider) -> Iterator[IdentityProvider]:
    """Serve `provider.jwks()` (as it is at each request) on a free loopback port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            provider.fetches += 1
            body = json.dumps(provider.jwks()).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    provider.url = f"http://127.0.0.1:{server.server_address[1]}/certs"
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
