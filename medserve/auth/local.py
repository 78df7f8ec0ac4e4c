"""The embedded platform's tokens: what `medserve token` mints and `medserve up` prints.

Like Jupyter printing its URL with a token: the operator gets one token with the everyday roles
and page links carrying it (opening one sets the session cookie and drops the token from the
address bar).
"""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass
from urllib.parse import urlencode

from medserve.auth.roles import Role
from medserve.auth.settings import AuthMode, AuthSettings
from medserve.auth.tokens import LocalSigner

# What the operator of a local platform does every day; admin is asked for explicitly.
OPERATOR_ROLES = (Role.PREDICT, Role.REVIEW, Role.READ_LOG)
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class NotLocalMode(RuntimeError):
    """Tokens are minted here only in local mode; an IdP mints them otherwise."""


def parse_duration(text: str) -> int:
    """'90', '90s', '30m', '12h', '7d' -> seconds (at least 1)."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"not a duration: {text!r} (e.g. 30m, 12h, 7d)")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def default_subject() -> str:
    return f"local:{getpass.getuser()}"


def mint(settings: AuthSettings, roles: list[Role], ttl_s: int, subject: str) -> str:
    """A token signed with the local key (created on first use)."""
    if settings.mode is not AuthMode.LOCAL:
        where = "none are needed" if settings.mode is AuthMode.OFF else "your IdP mints them"
        raise NotLocalMode(f"MEDSERVE_AUTH_MODE={settings.mode.value}: {where}")
    return LocalSigner(settings.key_file).mint(subject, roles, ttl_s)


@dataclass(frozen=True)
class OperatorAccess:
    """How the operator of `medserve up` reaches the services."""

    mode: AuthMode
    token: str | None
    ttl_s: int

    @classmethod
    def for_operator(cls, settings: AuthSettings) -> OperatorAccess:
        token = None
        if settings.mode is AuthMode.LOCAL:
            ttl = settings.local_token_ttl_s
            token = mint(settings, list(OPERATOR_ROLES), ttl, default_subject())
        return cls(settings.mode, token, settings.local_token_ttl_s)

    def page_link(self, url: str) -> str:
        return f"{url}?{urlencode({'token': self.token})}" if self.token else url

    def lines(self) -> list[str]:
        """What to print under the services table."""
        if self.mode is AuthMode.OFF:
            return ["ACCESS CONTROL IS OFF (MEDSERVE_AUTH_MODE=off): anyone can read patient data."]
        if self.token is None:
            return [f"Access: bearer tokens from your identity provider ({self.mode.value} mode)."]
        roles = ", ".join(role.value for role in OPERATOR_ROLES)
        hours = self.ttl_s / 3600
        return [
            f"Access token (roles {roles}; valid {hours:g} h). Send it as "
            "`Authorization: Bearer <token>` (gRPC: `authorization` metadata); the page links "
            "above carry it once. Others: `medserve token --role ...`.",
            self.token,
        ]
