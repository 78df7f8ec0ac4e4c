"""Tokens for tests, minted with the session's local signing key.

`conftest.py` points `MEDSERVE_AUTH_LOCAL_KEY_FILE` at a key under the session home, so every
service a test starts (local mode, the default) trusts these tokens.
"""

from __future__ import annotations

import functools

from medserve.auth.roles import Role
from medserve.auth.settings import AuthSettings
from medserve.auth.tokens import LocalSigner

# What a test client of the shared fixtures gets: everything but admin.
CLIENT_ROLES = (Role.PREDICT, Role.REVIEW, Role.READ_LOG)


@functools.cache
def session_signer() -> LocalSigner:
    return LocalSigner(AuthSettings().key_file)


def token(*roles: Role, subject: str = "tester", ttl_s: int = 6 * 3600) -> str:
    return session_signer().mint(subject, list(roles), ttl_s)


def bearer(*roles: Role, subject: str = "tester") -> dict[str, str]:
    """An `authorization` header (HTTP header and gRPC metadata alike) with those roles."""
    return {"authorization": f"Bearer {token(*roles, subject=subject)}"}


@functools.cache
def _client_token() -> str:
    return token(*CLIENT_ROLES)


def client_headers() -> dict[str, str]:
    """A fresh dict each call: tritonclient's HTTP `infer` writes into the headers it gets."""
    return {"authorization": f"Bearer {_client_token()}"}
